"""Decisions made from validation curves and the one test read: what to do after a stage, the
operating point, the gate, the base-model ranking, the decision log. Imports the layers below
(core, config, data, models, audit, training); no MLflow client, no Prefect."""
