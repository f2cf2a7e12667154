"""What a person reads: plots, the data report, Great Expectations Data Docs, the model card.
Imports the layers below (core to registry)."""
