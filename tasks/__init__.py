"""The recipe's steps and the machinery beneath them, in layers (bottom to top): core < config <
data | models < audit | training < decisions < registry < monitoring | reports < steps. An import
goes down, never up or sideways across steps; import-linter checks it (pyproject.toml). No flows
here: flows/ orders the steps."""
