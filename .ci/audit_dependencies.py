#!/usr/bin/env python3
"""CI's dependency audit: pip-audit over the installed environment, under the project's policy.

- A known vulnerability in an installed package fails (exit 1), unless its ID is listed,
  with a reason, in ``.ci/pip-audit-ignore.txt`` (``ID reason...``, one per line).
- The vulnerability service not answering (no network, DNS, a proxy, a timeout, a server
  error), or answering for only some packages, warns and exits 0: CI does not go red
  because pypi.org is out of reach. The warning says what was not audited.
- The project itself is installed editable and is not on PyPI: it is skipped.

Run with the interpreter of the environment to audit (pip-audit audits the environment
it runs in): ``.venv/bin/python .ci/audit_dependencies.py [--ignore-file F] [pip-audit options]``.
Options it does not know are handed to pip-audit (the tests point it at a local service).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORE_FILE = Path(__file__).with_name("pip-audit-ignore.txt")
# How requests and urllib3 word a service that cannot be reached or fails.
NETWORK_FAILURE = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|ProxyError|SSLError|NameResolutionError|Max retries exceeded"
    r"|Temporary failure in name resolution|Name or service not known|Connection refused|Network is unreachable"
    r"|ServiceError|HTTPError|[45]\d\d (Client|Server) Error",
    re.IGNORECASE,
)
TIMEOUT_S = 900


class PolicyError(ValueError):
    """The ignore file breaks the policy (an entry without a reason)."""


def read_ignores(path: Path) -> dict[str, str]:
    """``{vulnerability ID: reason}`` from the ignore file; every entry needs a reason."""
    ignores: dict[str, str] = {}
    if not path.exists():
        return ignores
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise PolicyError(f"{path.name}:{number}: {vuln_id} is ignored without a reason (write 'ID reason')")
        ignores[vuln_id] = reason.strip()
    return ignores


def warn(message: str) -> None:
    print(f"WARNING: pip-audit: {message}", file=sys.stderr, flush=True)


def judge(returncode: int, report: dict | None, stderr: str, ignores: dict[str, str]) -> int:
    """The policy applied to one pip-audit run: 0 passes (maybe with a warning), 1 fails."""
    if report is None:
        last = (stderr.strip().splitlines() or [f"exit {returncode}"])[-1]
        if NETWORK_FAILURE.search(stderr):
            warn(f"the vulnerability service could not be reached, nothing was audited ({last})")
            return 0
        print(stderr, file=sys.stderr)
        print(f"pip-audit failed ({last}): that is not a network problem, so it fails CI", file=sys.stderr)
        return 1
    dependencies = report.get("dependencies", [])
    vulnerable = [(dep, vuln) for dep in dependencies for vuln in dep.get("vulns", [])]
    if vulnerable:
        for dep, vuln in vulnerable:
            aliases = ", ".join(vuln.get("aliases") or [])
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            print(
                f"VULNERABLE {dep['name']} {dep.get('version')}: {vuln['id']}"
                + (f" ({aliases})" if aliases else "")
                + f"; fixed in {fixed}",
                file=sys.stderr,
            )
        print(
            f"{len(vulnerable)} known vulnerabilit{'y' if len(vulnerable) == 1 else 'ies'}: upgrade the pin in "
            f"pyproject.toml, or list the ID with a reason in .ci/{IGNORE_FILE.name}",
            file=sys.stderr,
        )
        return 1
    if returncode != 0:  # no finding in the report, yet pip-audit failed: judge by its words
        return judge(returncode, None, stderr, ignores)
    unaudited = [dep for dep in dependencies if dep.get("skip_reason") and "editable" not in dep["skip_reason"]]
    if unaudited:
        names = ", ".join(f"{dep['name']} {dep.get('version') or ''}".strip() for dep in unaudited[:5])
        warn(
            f"{len(unaudited)} of {len(dependencies)} packages could not be audited: the vulnerability service "
            f"did not know them (is it reachable?), e.g. {names}"
        )
    audited = sum(1 for dep in dependencies if not dep.get("skip_reason"))
    print(
        f"pip-audit: no known vulnerabilities in {audited} audited package(s)"
        + (f"; ignored by policy: {', '.join(sorted(ignores))}" if ignores else ""),
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    args, pip_audit_args = parser.parse_known_args(argv)
    try:
        ignores = read_ignores(args.ignore_file)
    except PolicyError as exc:
        print(f"pip-audit policy: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "audit.json"
        command = [
            sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable",
            "--format", "json", "--output", str(output), "--timeout", "20",
            *(f"--ignore-vuln={vuln_id}" for vuln_id in ignores), *pip_audit_args,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            warn(f"no answer within {TIMEOUT_S} s (is the vulnerability service reachable?): nothing was audited")
            return 0
        text = output.read_text(encoding="utf-8") if output.exists() else ""
    return judge(done.returncode, json.loads(text) if text.strip() else None, done.stderr, ignores)


if __name__ == "__main__":
    sys.exit(main())
