"""Mutation scores per module from ``mutmut results --all true`` (read on stdin).

``make mutate`` prints this table; tests/MUTATION.md keeps the latest one. Killed counts
mutants a test failed on or timed out on; "no tests" are functions no fast test reaches
(listed by name, since they are outside what mutation testing covers here).
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(
    r"^\s*(?P<module>[\w.]+)\.x(?:ǁ\w+ǁ|_)(?P<function>\w+?)__mutmut_\d+: (?P<status>.+)$"
)
KILLED = {"killed", "timeout"}


def main() -> None:
    by_module: defaultdict[str, Counter[str]] = defaultdict(Counter)
    untested: defaultdict[str, set[str]] = defaultdict(set)
    for line in sys.stdin:
        if not (match := LINE.match(line)):
            continue
        module, function, status = match["module"], match["function"], match["status"].strip()
        by_module[module][status] += 1
        if status == "no tests":
            untested[module].add(function)
    print("| module | mutants tested | killed | survived | score | not reached by fast tests |")
    print("|---|---|---|---|---|---|")
    for module, counts in sorted(by_module.items()):
        killed = sum(counts[status] for status in KILLED)
        tested = sum(counts.values()) - counts["no tests"]
        score = f"{100 * killed / tested:.1f}%" if tested else "n/a"
        skipped = ", ".join(sorted(untested[module])) or "-"
        survived = tested - killed
        print(f"| {module} | {tested} | {killed} | {survived} | {score} | {skipped} |")


if __name__ == "__main__":
    main()
