"""JUnit XML, so that CI systems show each model check as a test case.

>>> xml = junit_xml("lightning-maia audit", [CheckResult("spurious_units>0", True, "0 found")])
>>> '<testcase name="spurious_units&gt;0"' in xml and 'failures="0"' in xml
True
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_maia._atomic import write_text_atomically


@dataclass(frozen=True)
class CheckResult:
    """One model check: its condition, whether it passed, and a one-line reason."""

    name: str
    passed: bool
    message: str
    seconds: float = 0.0


def junit_xml(suite: str, checks: Sequence[CheckResult]) -> str:
    """A ``<testsuites>`` document with one ``<testcase>`` per check."""
    failures = sum(not check.passed for check in checks)
    total = sum(check.seconds for check in checks)
    root = ElementTree.Element(
        "testsuites",
        name=suite,
        tests=str(len(checks)),
        failures=str(failures),
        time=f"{total:.3f}",
    )
    testsuite = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{total:.3f}",
    )
    for check in checks:
        case = ElementTree.SubElement(
            testsuite,
            "testcase",
            name=check.name,
            classname=suite.replace(" ", "."),
            time=f"{check.seconds:.3f}",
        )
        if check.passed:
            ElementTree.SubElement(case, "system-out").text = check.message
        else:
            failure = ElementTree.SubElement(
                case, "failure", message=check.message, type="ModelCheckFailed"
            )
            failure.text = check.message
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def write_junit(path: str | Path, suite: str, checks: Sequence[CheckResult]) -> Path:
    """Write :func:`junit_xml` atomically."""
    target = Path(path)
    write_text_atomically(target, junit_xml(suite, checks) + "\n")
    return target
