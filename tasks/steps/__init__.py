"""The Prefect tasks, one module per recipe stage (validate, data, split, base_model, learn,
release, monitor), with their helpers: refs (the values they pass on), step (how a function
becomes a task), limits (per-model concurrency). A step module never imports another step
module, only these helpers and the layers below; flows/ orders them."""
