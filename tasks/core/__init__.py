"""The floor of the house: errors a user can fix, atomic writes, content hashes. Imports nothing
else from tasks, and no torch, pandas, mlflow or prefect."""
