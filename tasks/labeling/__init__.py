"""The review loop: queues of examples for people to label, sent to Label Studio (or a CSV) and
brought back into the labels store (tasks.data.labels_store)."""
