import json
import subprocess
import sys

from typer.testing import CliRunner

from flows.cli import app


def test_schema_prints_the_json_schema():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "Spec" and "metric" in schema["properties"]


def test_cli_start_up_imports_no_heavy_library():
    heavy = "('torch', 'prefect', 'mlflow', 'great_expectations')"
    code = f"import sys, flows.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(command in result.output for command in ("init", "run", "validate", "predict", "schema"))


def test_the_config_schema_and_its_registries_import_no_heavy_library():
    """Families and data kinds are found by importing their modules: none may pull in torch."""
    heavy = "('torch', 'torchvision', 'timm', 'transformers', 'pandas', 'mlflow', 'prefect')"
    code = ("import sys, tasks.config.spec; from tasks.config.families import FAMILIES; "
            "from tasks.config.data_kinds import DATA_KINDS; "
            "assert len(FAMILIES) >= 4 and len(DATA_KINDS) >= 2; "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
