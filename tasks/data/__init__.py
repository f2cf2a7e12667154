"""Labeled data as one table: each kind's reader, the sticky split, the keys that keep copies
together, the demo data, a cross-check's second labels, and `transferflow init`'s first config and
guideline. Imports tasks.core and tasks.config."""
