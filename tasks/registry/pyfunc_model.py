"""MLflow "models from code" entry point: the registered model is defined by this file (and the
`tasks` package logged beside it), not by a pickled object."""

from mlflow.models import set_model

from tasks.registry.serving import TransferflowModel

set_model(TransferflowModel())
