"""What a config may say: the spec, the base-model families and the data kinds, as options only.
Imports tasks.core and nothing else from tasks; no torch, pandas, mlflow or prefect, so `validate`,
`schema` and the CLI start fast."""
