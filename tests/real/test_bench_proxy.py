"""``tools/bench/proxy.py`` keeps working: it runs against real nginx, Prometheus and ``wrk``.

Figures are not checked (they vary); the table's shape is, that no request failed (the
remote-write bodies the script builds by hand are accepted by the real receiver: an invalid one
gets HTTP 400, counted as an error), and that the proxy's CPU time was measured.
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT, parse_sections

from tests.support.binaries import require_binary, require_nginx_with_upstream_resolve


def test_proxy_benchmark_quick_run():
    for binary in ("wrk", "prometheus"):
        require_binary(binary)
    pooled_nginx = require_nginx_with_upstream_resolve()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench" / "proxy.py"), "--quick",
         "--pooled-nginx", pooled_nginx],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (rows,) = parse_sections(result.stdout).values()
    assert [(r["backend"], r["request"].split()[0], r["proxy"]) for r in rows] == [
        (backend, request, proxy)
        for backend, request in [
            ("static", "GET"),
            ("static", "POST"),
            ("prometheus", "remote"),
            ("prometheus", "remote"),
        ]
        for proxy in ("$upstream", "pooled")
    ]
    assert all(r["errors"] == "0" for r in rows), result.stdout
    assert all(float(r["proxied/direct"]) > 0 for r in rows)
    for row in rows:
        low, high = map(float, row["ratio range"].split("-"))
        assert low <= float(row["proxied/direct"]) <= high
        # CPU time per request: wrk and the backend direct; wrk, the backend and the proxy.
        assert len(row["CPU us/req direct (wrk+backend)"].split("+")) == 2
        *_, proxy_cpu = map(float, row["CPU us/req proxied (wrk+backend+proxy)"].split("+"))
        assert proxy_cpu > 0, row
        assert float(row["CPU direct/proxied"]) > 0
