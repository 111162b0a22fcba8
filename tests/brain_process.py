"""`stockade -v brain` as a child process (plain text, free loopback ports), its log read line by
line: the tests that signal a real brain process (SIGTERM, SIGSTOP, SIGKILL) share it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_PATH = ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli"))
SERVING = re.compile(r"serving: sync\+drops on \S+ \(port (\d+)\)")


class BrainProcess:
    def __init__(self, kubeconfig: Path) -> None:
        argv = ["-v", "brain", "--kubeconfig", str(kubeconfig), "--insecure", "--listen", "127.0.0.1:0"]
        argv += ["--admin-listen", "127.0.0.1:0", "--admin-mtls-listen", "", "--http", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.cli.main", *argv],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={"PYTHONPATH": ENV_PATH, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        with self._seen:
            ok = self._seen.wait_for(
                lambda: any(text in ln for ln in self.lines) or self.proc.poll() is not None, timeout
            )
        assert ok and any(text in ln for ln in self.lines), f"no {text!r} in the brain's log:\n{''.join(self.lines)}"

    def port(self, timeout: float = 60.0) -> int:
        """The sync port, once the brain serves."""
        with self._seen:
            self._seen.wait_for(
                lambda: any(SERVING.search(ln) for ln in self.lines) or self.proc.poll() is not None, timeout
            )
        for ln in self.lines:
            if m := SERVING.search(ln):
                return int(m.group(1))
        raise AssertionError("the brain never served:\n" + "".join(self.lines))

    def terminate_within(self, grace: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the brain ignored SIGTERM for {grace:.0f} s:\n{''.join(self.lines)}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen brain dies too
            self.proc.kill()
        self.proc.wait()
