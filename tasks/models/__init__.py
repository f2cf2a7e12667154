"""Models: base-model backbones, the classifier and its operating point, self-describing
checkpoints, devices, minibatches and the embedding cache. Imports tasks.core and tasks.config."""
