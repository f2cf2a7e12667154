"""Labeled data as one table: each kind's reader, the sticky split, the keys that keep copies
together, the demo data and `transferflow init`'s first config. Imports tasks.core and tasks.config."""
