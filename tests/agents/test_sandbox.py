"""The restricted interpreter of code mode: what runs, what it refuses, its limits."""

from __future__ import annotations

import ast
import builtins
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lightning_maia.agents import (
    _sandbox as sandbox,
)
from lightning_maia.agents import (
    _sandbox_builtins as sandbox_builtins,
)
from lightning_maia.agents import (
    _sandbox_expressions as sandbox_expressions,
)
from lightning_maia.agents import (
    _sandbox_nodes as sandbox_nodes,
)
from lightning_maia.agents import (
    _sandbox_rules as sandbox_rules,
)
from lightning_maia.agents import (
    _sandbox_statements as sandbox_statements,
)
from lightning_maia.agents._sandbox import ProgramResult, SandboxViolation, run_program
from lightning_maia.errors import ConfigurationError, MaiaError, ToolError

# ---------------------------------------------------------------------------------- fake toolbox


@dataclass
class Exemplar:
    id: str
    activation: float
    _secret: str = "hidden"


@dataclass
class Description:
    id: str
    description: str


@dataclass
class Generated:
    id: str
    prompt: str


@dataclass
class UnitCall:
    id: str
    activation: float
    on_click: Callable[[], None] = print  # a callable stored in a field: readable, not callable

    @property
    def strong(self) -> bool:
        return self.activation > 0.5

    def scaled(self, factor: float) -> float:
        return self.activation * factor


@dataclass
class FakeTools:
    """Small, exact stand-ins for the toolbox: red prompts drive the unit, blue ones do not."""

    prompts: dict[str, str] = field(default_factory=dict)
    logged: list[tuple[str, list[str], str]] = field(default_factory=list)

    def dataset_exemplars(self) -> list[Exemplar]:
        return [Exemplar(f"ex{index}", 1.0 - index / 10) for index in range(6)]

    def describe_images(self, ids: list[str]) -> list[Description]:
        grounds = ["grass", "sand"]
        return [
            Description(image_id, f"a red star on {grounds[index % 2]}")
            for index, image_id in enumerate(ids)
        ]

    def text2image(self, prompts: list[str], n_per_prompt: int = 1) -> list[Generated]:
        made = []
        for number, prompt in enumerate(prompts):
            for copy in range(n_per_prompt):
                image_id = f"gen{number}_{copy}"
                self.prompts[image_id] = prompt
                made.append(Generated(image_id, prompt))
        return made

    def call_units(self, ids: list[str]) -> list[UnitCall]:
        calls = []
        for image_id in ids:
            if image_id not in self.prompts:
                raise ToolError(f"unknown image id {image_id!r}; use an id a tool returned")
            base = 0.8 if "red" in self.prompts[image_id] else 0.1
            calls.append(UnitCall(image_id, base + 0.1 * int(image_id[-1])))
        return calls

    def log_experiment(self, name: str, ids: list[str], conclusion: str = "") -> None:
        self.logged.append((name, ids, conclusion))

    def functions(self) -> dict[str, Callable[..., Any]]:
        names = ["dataset_exemplars", "describe_images", "text2image", "call_units"]
        return {name: getattr(self, name) for name in [*names, "log_experiment"]}


RESULT_TYPES = (Exemplar, Description, Generated, UnitCall)


def run(source: str, **options: Any) -> ProgramResult:
    return run_program(source, options.pop("functions", {}), **options)


def run_tools(source: str, tools: FakeTools | None = None, **options: Any) -> ProgramResult:
    tools = tools or FakeTools()
    return run_program(source, tools.functions(), allowed_types=RESULT_TYPES, **options)


MAIA_PROGRAM = """\
exemplars = dataset_exemplars()
ids = [e.id for e in exemplars[:5]]
for d in describe_images(ids):
    print(d.id, d.description)
prompts = ["a red star on grass", "a blue star on grass"]
gen = text2image(prompts, n_per_prompt=2)
calls = call_units([g.id for g in gen])
acts = {c.id: round(c.activation, 3) for c in calls}
print(max(acts, key=acts.get), sorted(acts.values()))
log_experiment("colour test", [c.id for c in calls], conclusion=f"mean {sum(acts.values())/len(acts):.2f}")
"""  # noqa: E501 (the program as a model writes it)


# ---------------------------------------------------------------------------------- what runs


def test_maia_style_program_runs_against_the_tools() -> None:
    tools = FakeTools()
    result = run_tools(MAIA_PROGRAM, tools)
    assert result.error is None
    assert result.output == (
        "ex0 a red star on grass\n"
        "ex1 a red star on sand\n"
        "ex2 a red star on grass\n"
        "ex3 a red star on sand\n"
        "ex4 a red star on grass\n"
        "gen0_1 [0.1, 0.2, 0.8, 0.9]\n"
    )
    assert tools.logged == [("colour test", ["gen0_0", "gen0_1", "gen1_0", "gen1_1"], "mean 0.50")]
    assert result.variables["ids"] == ["ex0", "ex1", "ex2", "ex3", "ex4"]
    assert result.ok
    assert 100 < result.steps < 1000


def test_fstrings_apply_specs_and_conversions() -> None:
    source = (
        'name = "unit"\n'
        "x = 3.14159\n"
        "n = 42\n"
        "width = 6\n"
        'print(f"{name!r}|{x:.2f}|{n:>5}|{n:05d}|{x:{width}.1f}|{name:^8}|'
        "{True}|{[1, 'a']}|{n!s}\")\n"
        'print(f"{0.5:.0%} {1234567:,} {n:x} {{literal}}")\n'
    )
    result = run(source)
    assert result.error is None
    assert (
        result.output
        == "'unit'|3.14|   42|00042|   3.1|  unit  |True|[1, 'a']|42\n50% 1,234,567 2a {literal}\n"
    )


def test_comprehensions_of_every_kind() -> None:
    source = (
        "nums = [3, 1, 4, 1, 5, 9, 2, 6]\n"
        "print([n * n for n in nums if n % 2])\n"
        "print({n: n > 3 for n in nums[:3]})\n"
        "print(sorted({n % 3 for n in nums}))\n"
        "print(sum(n for n in nums), list(n for n in range(3)))\n"
        "print([(a, b) for a in range(3) for b in range(a) if a != b])\n"
        "n = 'outer'\n"
        "print([n for n in 'ab'], n)\n"
    )
    result = run(source)
    assert result.error is None
    assert result.output == (
        "[9, 1, 1, 25, 81]\n"
        "{3: False, 1: False, 4: True}\n"
        "[0, 1, 2]\n"
        "31 [0, 1, 2]\n"
        "[(1, 0), (2, 0), (2, 1)]\n"
        "['a', 'b'] outer\n"
    )


def test_functions_with_defaults_recursion_closures_and_lambdas() -> None:
    source = (
        "def fib(n):\n"
        "    if n < 2:\n"
        "        return n\n"
        "    return fib(n - 1) + fib(n - 2)\n"
        "def scale(values, factor=2, *, offset=0):\n"
        "    return [v * factor + offset for v in values]\n"
        "def counter(start):\n"
        "    def step(by=1):\n"
        "        return start + by\n"
        "    return step\n"
        "def spread(*args, **kwargs):\n"
        "    return len(args), sorted(kwargs)\n"
        "print([fib(i) for i in range(10)])\n"
        "print(scale([1, 2]), scale([1, 2], 3, offset=1), counter(10)(5))\n"
        "print(sorted(['bb', 'a', 'ccc'], key=lambda s: -len(s)), spread(1, 2, z=1, y=2))\n"
        "print(list(map(lambda x: x + 1, [1, 2])), list(filter(lambda x: x > 1, [1, 2, 3])))\n"
    )
    result = run(source)
    assert result.error is None
    assert result.output == (
        "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"
        "[2, 4] [4, 7] 15\n"
        "['ccc', 'bb', 'a'] (2, ['y', 'z'])\n"
        "[2, 3] [2, 3]\n"
    )


def test_try_except_else_finally_and_raise() -> None:
    source = (
        "def safe_ratio(a, b):\n"
        "    try:\n"
        "        r = a / b\n"
        "    except ZeroDivisionError as error:\n"
        "        print('caught', error)\n"
        "        return None\n"
        "    else:\n"
        "        return r\n"
        "    finally:\n"
        "        print('finally', a)\n"
        "print(safe_ratio(1, 0), safe_ratio(4, 2))\n"
        "try:\n"
        "    raise ValueError('bad value')\n"
        "except (KeyError, ValueError) as error:\n"
        "    print(type_name := 'ValueError' if isinstance(error, ValueError) else '?')\n"
    )
    refused = run(source)  # the walrus is refused before anything runs
    assert refused.error == (
        "refused at line 15: assignment expressions (:=) are not allowed; "
        "assign on a line of its own"
    )
    assert refused.output == ""
    source = source.replace("type_name := ", "") + (
        "try:\n"
        "    {}['missing']\n"
        "except Exception as error:\n"
        "    print('KeyError' if isinstance(error, KeyError) else '?', error)\n"
        "try:\n"
        "    try:\n"
        "        [][0]\n"
        "    except IndexError:\n"
        "        raise\n"
        "except Exception as error:\n"
        "    print('re-raised', error)\n"
    )
    result = run(source)
    assert result.error is None
    assert result.output == (
        "caught division by zero\n"
        "finally 1\n"
        "finally 4\n"
        "None 2.0\n"
        "ValueError\n"
        "KeyError 'missing'\n"
        "re-raised list index out of range\n"
    )


def test_tuple_unpacking_augmented_assignment_and_del() -> None:
    source = (
        "a, (b, c) = 1, [2, 3]\n"
        "first, *middle, last = range(5)\n"
        "x = y = 0\n"
        "x += 5\n"
        "items = [1, 2]\n"
        "alias = items\n"
        "items += [3]\n"
        "scores = {'a': 1}\n"
        "scores['a'] += 10\n"
        "scores['b'] = 2\n"
        "del scores['a']\n"
        "items[0] = 9\n"
        "del items[1]\n"
        "for i, (key, value) in enumerate(scores.items()):\n"
        "    print(i, key, value)\n"
        "print(a, b, c, first, middle, last, x, y, alias, scores)\n"
        "del x\n"
        "print('x' in [k for k in ['a']])\n"
    )
    result = run(source)
    assert result.error is None
    assert result.output == "0 b 2\n1 2 3 0 [1, 2, 3] 4 5 0 [9, 3] {'b': 2}\nFalse\n"
    assert "x" not in result.variables
    assert (
        run("a, b = [1, 2, 3]").error
        == "ValueError at line 1: too many values to unpack (expected 2)"
    )


def test_loops_with_break_continue_and_else() -> None:
    source = (
        "found = []\n"
        "for n in range(10):\n"
        "    if n % 2:\n"
        "        continue\n"
        "    if n > 6:\n"
        "        break\n"
        "    found.append(n)\n"
        "else:\n"
        "    found.append('no break')\n"
        "i = 0\n"
        "while i < 3:\n"
        "    i += 1\n"
        "else:\n"
        "    found.append('while done')\n"
        "print(found)\n"
    )
    assert run(source).output == "[0, 2, 4, 6, 'while done']\n"


def test_variables_persist_between_programs() -> None:
    start = {"budget": 3}
    first = run(
        "def double(x):\n    return x * factor\nfactor = 2\nseen = [budget]", variables=start
    )
    assert first.error is None
    assert start == {"budget": 3}  # the caller's dict is copied, never changed
    second = run("seen.append(double(10))\nprint(seen)", variables=first.variables)
    assert second.error is None
    assert second.output == "[3, 20]\n"
    third = run("factor = 5\nsay = print\nprint(double(1))", variables=second.variables)
    assert third.output == "5\n"  # a kept function reads the globals of the run that calls it
    fourth = run("say('kept builtin')", variables=third.variables)
    assert fourth.output == "kept builtin\n"


def test_public_attributes_of_allowed_types() -> None:
    result = run_tools(
        "calls = call_units(text2image(['a red dot'])[0:1][0].id.split())\n"
        "c = calls[0]\n"
        "print(c.id, c.strong, c.scaled(10), c)\n"
        "scaled = c.scaled\n"
        "print(scaled(2))\n"
    )
    assert result.error is None
    assert result.output == (
        "gen0_0 True 8.0 UnitCall(id='gen0_0', activation=0.8, on_click=<built-in function print>)"
        "\n1.6\n"
    )


# ---------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("__import__('os')", "refused at line 1: names starting with an underscore"),
        ("import os", "refused at line 1: import statements are not allowed"),
        ("x = 1\nfrom os import path", "refused at line 2: import statements are not allowed"),
        (
            "().__class__.__subclasses__()",
            "refused at line 1: attributes starting with an underscore",
        ),
        ("[].__class__", "refused at line 1: attributes starting with an underscore"),
        ("(lambda: 0).__code__", "refused at line 1: attributes starting with an underscore"),
        ("e = dataset_exemplars()[0]\ne._secret", "refused at line 2: attributes starting with"),
        ('"{0.__class__}".format(1)', "refused at line 1: attribute 'format' of str objects"),
        ('"{0}".format_map({})', "refused at line 1: attribute 'format_map' of str objects"),
        ("(x for x in []).gi_frame", "refused at line 1: attribute 'gi_frame' of list objects"),
        ("(lambda: 0).code", "refused at line 1: attribute 'code' of SandboxFunction objects"),
        ("class A:\n    pass", "refused at line 1: class definitions are not allowed"),
        ("with open('x') as f:\n    pass", "refused at line 1: with statements are not allowed"),
        ("x = 0\ndef f():\n    global x", "refused at line 3: global and nonlocal statements"),
        ("def f():\n    x = 1\n    def g():\n        nonlocal x", "refused at line 4: global and"),
        ("async def f():\n    pass", "refused at line 1: async code is not allowed"),
        ("def f():\n    yield 1", "refused at line 2: yield is not allowed"),
        (
            "match 1:\n    case 1:\n        pass",
            "refused at line 1: match statements are not allowed",
        ),
        ("@print\ndef f():\n    pass", "refused at line 2: decorators are not allowed"),
        ("print(y := 1)", "refused at line 1: assignment expressions (:=) are not allowed"),
        ("e = dataset_exemplars()[0]\ne.id = 'x'", "refused at line 2: assigning to or deleting"),
        ("t = (1, 2)\nt[0] = 5", "refused at line 2: item assignment and deletion are allowed on"),
        ("(1).real", "refused at line 1: attribute 'real' of int objects is not accessible"),
        ("c = call_units([])\nc.append(1)\nprint.name", "refused at line 3: attribute 'name'"),
        ("def f(__x):\n    pass", "refused at line 1: names starting with an underscore"),
        ("print(**{'__x': 1})", "refused at line 1: keyword arguments may not start with '_'"),
        ("isinstance(1, type(1))", "NameError at line 1: name 'type' is not available"),
    ],
)
def test_refused_constructs(source: str, expected: str) -> None:
    result = run_tools(source)
    assert result.error is not None
    assert result.error.startswith(expected)


@pytest.mark.parametrize(
    "name",
    [
        "getattr", "setattr", "delattr", "eval", "exec", "compile", "open", "globals", "locals",
        "vars", "type", "object", "input", "help", "breakpoint", "memoryview", "id", "dir",
    ],
)  # fmt: skip
def test_dangerous_builtins_are_not_available(name: str) -> None:
    result = run(f"print('before')\nx = {name}")
    assert result.error is not None
    assert result.error.startswith(f"NameError at line 2: name '{name}' is not available")
    assert result.output == "before\n"


def test_dangerous_calls_do_nothing(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    for source in (
        'open("/etc/passwd").read()',
        'getattr(x, "__class__")',
        'eval("1")',
        'exec("x=1")',
        "globals()",
        "p.write_text('x')",
        "p.open('w')",
    ):
        result = run(source, variables={"p": target, "x": 1})
        assert result.error is not None, source
        assert not target.exists()
    assert run("p.write_text('x')", variables={"p": target}).error == (
        "refused at line 1: attribute 'write_text' of PosixPath objects is not accessible; "
        "programs read the fields of the tools' results and call the safe methods of str, list, "
        "dict and set"
    )
    assert run("print(str(p).endswith('written.txt'))", variables={"p": target}).output == "True\n"


def test_only_allowed_callables_can_be_called() -> None:
    def hand_out_a_function() -> Callable[..., Any]:
        return builtins.print  # a host callable that reached the program

    functions = {"hand_out": hand_out_a_function}
    called = run("f = hand_out()\nf('hi')", functions=functions)
    assert called.error is not None
    assert called.error.startswith("refused at line 2: calling builtin_function_or_method")
    assert called.output == ""
    as_key = run("f = hand_out()\nsorted([2, 1], key=f)", functions=functions)
    assert as_key.error is not None and as_key.error.startswith("refused at line 2: calling")
    field_callable = run_tools("c = call_units(text2image(['x'])[0].id.split())[0]\nc.on_click()")
    assert field_callable.error is not None
    assert field_callable.error.startswith("refused at line 2: calling builtin_function_or_method")
    assert run("x = 5\nx()").error == "TypeError at line 2: 'int' object is not callable"


def test_except_clauses_name_only_allowed_exceptions() -> None:
    result = run("try:\n    1 / 0\nexcept p:\n    pass", variables={"p": OSError})
    assert result.error is not None
    assert result.error.startswith("refused at line 3: except clauses may name only Exception")


def test_programs_cannot_catch_refusals_or_limits() -> None:
    limit = run("try:\n    while True:\n        pass\nexcept Exception:\n    print('caught')")
    assert limit.error == "stopped at line 2: step limit of 20000 reached"
    assert limit.output == ""
    refusal = run("try:\n    '{}'.format(1)\nexcept Exception:\n    print('caught')")
    assert refusal.error is not None and refusal.error.startswith("refused at line 2")
    assert refusal.output == ""
    finally_skipped = run("try:\n    [0] * 10**9\nfinally:\n    print('cleanup')")
    assert finally_skipped.output == ""


# ---------------------------------------------------------------------------------- limits


def test_infinite_loop_stops_at_the_step_limit_quickly() -> None:
    started = time.monotonic()
    result = run("x = 0\nwhile True:\n    pass", max_steps=5_000)
    assert time.monotonic() - started < 2.0
    assert result.error == "stopped at line 3: step limit of 5000 reached"
    assert result.steps == 5_000


def test_iterating_a_huge_range_stops_at_the_step_limit() -> None:
    result = run("total = 0\nfor i in range(10**12):\n    total += i")
    assert result.error is not None
    assert "step limit of 20000 reached" in result.error
    assert 0 < result.variables["total"] < 10**9


def test_slow_tools_count_against_the_time_limit() -> None:
    def slow_tool() -> int:
        time.sleep(0.05)
        return 1

    started = time.monotonic()
    functions = {"slow_tool": slow_tool}
    result = run("while True:\n    slow_tool()", functions=functions, timeout_s=0.3, max_steps=300)
    assert result.error == "stopped at line 1: time limit of 0.3 s reached"
    assert time.monotonic() - started < 1.0


def test_deep_recursion_is_stopped() -> None:
    result = run("def down(n):\n    return down(n + 1)\ndown(0)")
    assert result.error == "stopped at line 2: recursion depth limit of 50 calls reached in down()"
    assert run("def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nprint(f(40))").output == "40\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[0] * 10**9", "a list of 1,000,000,000 items is larger than the limit of 100,000"),
        ("10**9 * [0]", "a list of 1,000,000,000 items is larger"),
        ('"a" * 10**9', "a str of 1,000,000,000 characters is larger than the limit of 100,000"),
        ("list(range(10**12))", "a range of 1,000,000,000,000 items is larger"),
        ("list(range(0, 10**30, 7))", "a range of 142,857,142,857,142,857,142,857,142,858 items"),
        ("sum(range(10**12))", "a range of 1,000,000,000,000 items is larger"),
        ("sorted(range(10**12))", "a range of 1,000,000,000,000 items is larger"),
        ("2 ** 10**9", "the result of ** would have about 1,000,000,000 bits"),
        ("1 << 10**9", "the result of << would have about 1,000,000,001 bits"),
        ('"a".ljust(10**9)', "a str of 1,000,000,000 characters is larger"),
        ('f"{1:>999999999}"', "a str of 999,999,999 characters is larger"),
        ('"%999999999d" % 1', "a str of 999,999,999 characters is larger"),
        ('("a" * 100000).replace("a", "ab")', "a str of 200,000 characters is larger"),
        ('("-" * 100000).join(["a"] * 3)', "a str of 200,003 characters is larger"),
        ("xs = [1]\nfor _ in range(30):\n    xs.extend(xs)", "a list of 131,072 items is larger"),
        ("x = [[0] * 100000 for _ in range(1000)]", "the program built more than 2,000,000 items"),
        ("s = 'ab'\nwhile True:\n    s = s + s", "a str of 131,072 characters is larger"),
        ("big = ['a' * 10**5] * 10**5\nprint(big)", "a str of 200,002 characters is larger"),
        ("big = ['a' * 10**5] * 10**5\nx = '%s' % (big,)", "a str of 200,008 characters"),
        ("big = ['a' * 10**5] * 10**5\nx = f'{big!r}'", "a str of 200,002 characters"),
        ("d = {i: 'a' * 10**5 for i in range(9)}\nstr(d.values())", "characters is larger than"),
        ("big = ['a' * 10**5] * 10**5\nraise ValueError(big)", "(a message too long to show)"),
    ],
)
def test_oversized_values_are_refused_before_allocating(source: str, expected: str) -> None:
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = run(source)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error is not None
    assert expected in result.error
    assert peak < 50 * 2**20  # far below what the refused value would take
    assert elapsed < 5.0


def test_output_is_truncated_with_a_note() -> None:
    result = run("for i in range(100):\n    print('x' * 100)", max_output_chars=250)
    assert result.error is None
    assert (
        result.output
        == ("x" * 100 + "\n" + "x" * 100 + "\n" + "x" * 48)
        + "\n[output truncated: the program printed more than 250 characters]\n"
    )


# ---------------------------------------------------------------------------------- errors


def test_tool_errors_are_reported_with_their_message() -> None:
    result = run_tools("print('asking')\ncalls = call_units(['nope'])\nprint('never')")
    assert result.error == (
        "ToolError at line 2: unknown image id 'nope'; use an id a tool returned"
    )
    assert result.output == "asking\n"
    caught = run_tools(
        "try:\n    call_units(['nope'])\nexcept Exception as error:\n    print('fix:', error)"
    )
    assert caught.output == "fix: unknown image id 'nope'; use an id a tool returned\n"


def test_program_errors_name_their_line() -> None:
    assert run("x = 1\ny = 2\nprint(z)").error == "NameError at line 3: name 'z' is not defined"
    assert run("a = [1]\nb = a[\n  5]").error == "IndexError at line 2: list index out of range"
    assert run("x = int('seven')").error == (
        "ValueError at line 1: invalid literal for int() with base 10: 'seven'"
    )
    assert run("def f(a):\n    return a\nf()").error == (
        "TypeError at line 3: f() missing a required argument: 'a'"
    )
    assert run("def f():\n    return 1 / 0\nf()").error == (
        "ZeroDivisionError at line 2: division by zero"
    )
    assert run("assert 1 > 2, 'one is not more'").error == (
        "AssertionError at line 1: one is not more"
    )
    assert run("x = (1,\n").error == "SyntaxError at line 1: '(' was never closed"
    assert run("break").error == "SyntaxError at line 1: 'break' outside loop"
    assert run("return 5").error == "SyntaxError at line 1: 'return' outside function"


def test_bad_options_and_interpreter_level_exceptions_propagate() -> None:
    with pytest.raises(ConfigurationError, match="`max_steps` can be a positive int, got 0"):
        run("pass", max_steps=0)
    with pytest.raises(ConfigurationError, match="`functions` can be names"):
        run("pass", functions={"_private": print})
    with pytest.raises(ConfigurationError, match="`allowed_types`"):
        run("pass", allowed_types=(object,))

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("interrupted()", functions={"interrupted": interrupted})


def test_sandbox_violation_is_a_maia_error() -> None:
    assert issubclass(SandboxViolation, MaiaError)
    assert issubclass(sandbox.SandboxLimitExceeded, SandboxViolation)


# ---------------------------------------------------------------------------------- never exec


def test_runs_never_exec_eval_or_compile_program_text(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_to_code: list[object] = []
    real_compile = builtins.compile

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exec/eval called during a sandboxed run")

    def ast_only_compile(
        source: Any, filename: Any, mode: str, flags: int = 0, **kwargs: Any
    ) -> Any:
        if not flags & ast.PyCF_ONLY_AST:
            compiled_to_code.append(source)
            raise AssertionError("compile() to a code object during a sandboxed run")
        return real_compile(source, filename, mode, flags, **kwargs)

    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    tools = FakeTools()
    program = MAIA_PROGRAM + (
        "def best(calls, key=lambda c: c.activation):\n"
        "    try:\n"
        "        return max(calls, key=key)\n"
        "    except ValueError:\n"
        "        return None\n"
        "top = best(calls)\n"
        "print(f'{top.id}: {top.activation:.1f}', [c.id for c in calls if c.strong])\n"
        "print(best([]), {k: v for k, v in zip('ab', range(2))}, sorted(set('cab')))\n"
    )
    result = run_tools(program, tools)
    assert result.error is None
    assert result.output.endswith(
        "gen0_1: 0.9 ['gen0_0', 'gen0_1']\nNone {'a': 0, 'b': 1} ['a', 'b', 'c']\n"
    )
    assert compiled_to_code == []


def test_sandbox_modules_never_name_exec_eval_or_compile() -> None:
    modules = (
        sandbox,
        sandbox_builtins,
        sandbox_expressions,
        sandbox_nodes,
        sandbox_rules,
        sandbox_statements,
    )
    for module in modules:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        attributes = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and ast.unparse(node) != "re.compile"
        }
        assert not {"exec", "eval", "compile"} & (names | attributes), module.__name__
