"""The registry side: MLflow tracking, the test ledger, the champion, warm starts, the served
pyfunc and `predict`. Imports the layers below (core to decisions)."""
