#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report (index.json).

Usage: summarize.py [--agent NAME] OUTDIR_OR_INDEX_JSON

Counts the per-case behaviours (`behavior`) and close behaviours
(`behaviorClose`), prints a table, lists every failed case with its
description, and ends with exactly one line of the form

    autobahn: N passed, M failed

A case is failed when its behavior or its behaviorClose is FAILED; it is
passed when it is not failed and its behavior is OK, NON-STRICT or
INFORMATIONAL. Anything else (UNIMPLEMENTED, NO_CLOSE, ...) is neither.
Exit status: 0 if at least one case ran and none failed, 1 if any case
failed or no case ran, 2 if the report cannot be read.
"""

import argparse
import html
import json
import os
import re
import sys

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
FAILED = "FAILED"
# Rows always shown, in this order; any other value seen is appended.
KNOWN = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def case_key(case_id):
    """Sort '1.1.10' after '1.1.9'."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def clean(text, limit=200):
    """Autobahn descriptions contain HTML; make them one plain line."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", str(text)))
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def load_case_report(outdir, entry):
    name = entry.get("reportfile")
    if not name:
        return {}
    try:
        with open(os.path.join(outdir, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="wstest outdir, or the index.json in it")
    ap.add_argument("--agent", help="only this agent (default: all in the report)")
    args = ap.parse_args(argv)

    index = args.report
    if os.path.isdir(index):
        index = os.path.join(index, "index.json")
    outdir = os.path.dirname(os.path.abspath(index))
    try:
        with open(index, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print("summarize: cannot read %s: %s" % (index, e), file=sys.stderr)
        return 2
    if not isinstance(report, dict):
        print("summarize: %s is not an Autobahn index.json" % index, file=sys.stderr)
        return 2

    agents = sorted(report)
    if args.agent is not None:
        if args.agent not in report:
            print("summarize: agent %r not in %s (agents: %s)"
                  % (args.agent, index, ", ".join(agents) or "none"), file=sys.stderr)
            return 2
        agents = [args.agent]

    cases = []  # (agent, case_id, entry)
    for agent in agents:
        for case_id in sorted(report[agent], key=case_key):
            cases.append((agent, case_id, report[agent][case_id]))
    multi = len(agents) > 1

    def label(agent, case_id):
        return "%s %s" % (agent, case_id) if multi else case_id

    beh, close = {}, {}
    passed, failed, other, warnings = 0, [], [], []
    for agent, case_id, e in cases:
        b = e.get("behavior", "?")
        c = e.get("behaviorClose", "?")
        beh[b] = beh.get(b, 0) + 1
        close[c] = close.get(c, 0) + 1
        if b == FAILED or c == FAILED:
            failed.append((agent, case_id, e))
        elif b in PASSING:
            passed += 1
            if c not in ("OK", "INFORMATIONAL"):
                warnings.append((agent, case_id, e))
        else:
            other.append((agent, case_id, e))

    rows = list(KNOWN) + sorted((set(beh) | set(close)) - set(KNOWN))
    print("Autobahn|Testsuite report %s: %d case(s), agent(s): %s"
          % (index, len(cases), ", ".join(agents) or "none"))
    print("%-18s %9s %14s" % ("", "behavior", "behaviorClose"))
    for r in rows:
        print("%-18s %9d %14d" % (r, beh.get(r, 0), close.get(r, 0)))

    if other:
        print("\nNeither passed nor failed (%d):" % len(other))
        for agent, case_id, e in other:
            print("  %-10s behavior=%s close=%s"
                  % (label(agent, case_id), e.get("behavior"), e.get("behaviorClose")))

    if warnings:
        print("\nPassed, with a non-OK close behaviour (%d):" % len(warnings))
        for agent, case_id, e in warnings:
            print("  %-10s behavior=%s close=%s remoteCloseCode=%s"
                  % (label(agent, case_id), e.get("behavior"), e.get("behaviorClose"),
                     e.get("remoteCloseCode")))

    if failed:
        print("\nFailed cases (%d):" % len(failed))
        for agent, case_id, e in failed:
            detail = load_case_report(outdir, e)
            print("  %-10s behavior=%s close=%s remoteCloseCode=%s"
                  % (label(agent, case_id), e.get("behavior"), e.get("behaviorClose"),
                     e.get("remoteCloseCode")))
            if detail.get("description"):
                print("      description: %s" % clean(detail["description"]))
            if e.get("behavior") == FAILED and detail.get("result"):
                print("      result: %s" % clean(detail["result"]))
            if e.get("behaviorClose") == FAILED and detail.get("resultClose"):
                print("      close: %s" % clean(detail["resultClose"]))
        print("  (details: %s)" % os.path.join(outdir, "index.html"))

    if not cases:
        print("\nsummarize: the report holds no test case (was the server reachable?)")
    print("autobahn: %d passed, %d failed" % (passed, len(failed)))
    sys.stdout.flush()
    return 1 if failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
