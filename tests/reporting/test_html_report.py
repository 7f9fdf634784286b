"""The HTML report: escaping, self-containment, content, the toolbox bridge, a real browser."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.chromium import load_page, requires_chromium, screenshot
from PIL import Image

from lightning_maia.agents._records import Step, ToolCallRecord, UnitReport
from lightning_maia.errors import ConfigurationError
from lightning_maia.reporting._html_report import render_report, unit_anchor, write_report
from lightning_maia.reporting._images import MAX_IMAGE_SIDE
from lightning_maia.reporting._report_content import ReportImage, UnitSection, sections_from_toolbox
from lightning_maia.subject import Subject
from lightning_maia.tools._results import Experiment
from lightning_maia.tools.backends._base import Usage
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import NeuronSpec, ShapesWorld, SyntheticNeuronModel
from lightning_maia.world._scene import Concept

#: Text a model (or a user) might write that would break out of the page if not escaped.
HOSTILE = (
    "<script>alert(1)</script>",
    '" onerror="x',
    "</textarea>",
    "<img src=x onerror=alert(2)>",
    "'; alert(3); '",
    "</style><style>body{display:none}</style>",
    "<!-- open comment",
)


#: The hostile strings shown as JSON (tool arguments, task details).
AS_JSON = (1, 3, 15)


def hostile(index: int) -> str:
    return f"{HOSTILE[index % len(HOSTILE)]} #{index}"


def escaped(index: int) -> str:
    """How the page shows ``hostile(index)``: JSON quoting first where shown as JSON."""
    text = hostile(index)
    return html.escape(json.dumps(text)[1:-1] if index in AS_JSON else text, quote=True)


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def gradient(height: int, width: int) -> torch.Tensor:
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    return torch.stack([ys, xs, (ys + xs) / 2])


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_uri(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
    assert image.format == "PNG"
    return image


def hostile_section() -> UnitSection:
    """A report where every string a model or user writes is hostile."""
    step = Step(
        index=0,
        request=hostile(0),
        tool_calls=[
            ToolCallRecord(
                "text2image", {"prompts": [hostile(1)]}, hostile(2), ["gen-1"], seconds=0.25
            ),
            ToolCallRecord("call_units", {"image_ids": [hostile(3)]}, "", error=hostile(4)),
        ],
        error=hostile(5),
        seconds=1.5,
        usage=Usage(1, 120, 30, 0.002),
    )
    experiment = Experiment(
        title=hostile(6),
        image_ids=["gen-1", "gen-2"],
        activations={"gen-1": 0.731, "gen-2": 0.052},
        descriptions={"gen-1": hostile(7)},
        conclusion=hostile(8),
        hypothesis=hostile(9),
    )
    report = UnitReport(
        unit="layer4:17",
        task="describe_unit",
        agent="vlm",
        label=hostile(10),
        description=hostile(11),
        concepts=(hostile(12), "shape=star"),
        verdict=hostile(13),
        details={hostile(14): [hostile(15)]},
        evidence=[experiment],
        steps=[step],
        usage=Usage(1, 120, 30, 0.002),
        seconds=2.0,
        images=2,
    )
    return UnitSection(
        report=report,
        exemplars=[
            ReportImage(gradient(16, 16), caption=hostile(16), activation=1.2, description="x"),
            ReportImage(png_bytes(20, 10), caption="dataset item 3", activation=0.9),
        ],
        experiment_images={
            "gen-1": ReportImage(gradient(64, 64), caption=hostile(17)),
            "gen-2": ReportImage(gradient(300, 200), caption="a large one"),
        },
        history=[
            {"epoch": 1, "label": hostile(18)},
            {"epoch": 2, "label": hostile(10), "changed": True},
        ],
        score=0.875,
    )


def failed_section(
    unit: str = "output:cat", reason: str = "endpoint timed out after 30 s"
) -> UnitSection:
    return UnitSection(UnitReport.failed(unit, "spurious_check", "vlm", reason))


@pytest.fixture
def sections() -> list[UnitSection]:
    return [hostile_section(), failed_section(reason=hostile(19)), failed_section(hostile(20))]


@pytest.fixture
def page(sections: list[UnitSection]) -> str:
    return render_report(sections, title=hostile(21), meta={hostile(22): hostile(23), "epoch": "3"})


# -- escaping -------------------------------------------------------------------------------


def test_every_model_and_user_string_is_escaped(page: str) -> None:
    for index in range(24):
        text = hostile(index)
        assert text not in page, text
        assert escaped(index) in page, text
    tags = parse(page)
    assert len(tags.named("script")) == 1
    assert len(tags.named("style")) == 1
    assert tags.named("textarea") == [] and tags.named("input") == []
    handlers = [name for _, attrs in tags.tags for name in attrs if name.startswith("on")]
    assert handlers == []
    # The ready mark is the script's to set, never the markup's.
    assert "data-ready" not in page


def test_template_placeholders_in_model_text_stay_text() -> None:
    report = UnitReport("layer1:0", "describe_unit", "vlm", label="{{body}} {{csp}} $title")
    page = render_report([UnitSection(report)], "{{title}}")
    assert page.count("<main>") == 1
    assert "{{body}} {{csp}} $title" in page
    assert "<title>{{title}}</title>" in page


# -- self-contained -------------------------------------------------------------------------


def test_page_is_self_contained_and_its_images_decode(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert 'src="/' not in page
    tags = parse(page)
    csp = [
        attrs
        for attrs in tags.named("meta")
        if attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert len(csp) == 1 and "default-src 'none'" in str(csp[0]["content"])
    for _, attrs in tags.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("data:image/png;base64," if name == "src" else "#"), value
    images = tags.named("img")
    # 2 exemplars + 2 experiment images (each shown once).
    assert len(images) == 4
    sizes = []
    for attrs in images:
        decoded = decode_data_uri(str(attrs["src"]))
        assert decoded.size == (int(str(attrs["width"])), int(str(attrs["height"])))
        sizes.append(decoded.size)
    assert sizes == [
        (16, 16),
        (20, 10),
        (64, 64),
        (round(200 * MAX_IMAGE_SIDE / 300), MAX_IMAGE_SIDE),
    ]
    pixelated = [attrs for attrs in images if attrs.get("class") == "pixelated"]
    assert len(pixelated) == 3  # all but the 256-pixel one


def test_mask_dims_outside_the_highlighted_region() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    section = UnitSection(
        UnitReport("layer1:0", "describe_unit", "scientist"),
        exemplars=[ReportImage(torch.full((3, 8, 8), 0.8), activation=1.0, mask=mask)],
    )
    (attrs,) = parse(render_report([section], "masks")).named("img")
    pixels = np.asarray(decode_data_uri(str(attrs["src"])).convert("RGB")).astype(int)
    assert (pixels[:, :4] == round(0.8 * 255)).all()
    assert (np.abs(pixels[:, 4:] - 0.8 * 0.25 * 255) <= 1).all()


def test_bad_options_fail_with_their_name() -> None:
    with pytest.raises(ConfigurationError, match="max_images_per_experiment"):
        render_report([], "x", max_images_per_experiment=-1)
    bad = UnitSection(
        UnitReport("layer1:0", "describe_unit", "scientist"),
        exemplars=[ReportImage(torch.zeros(2, 4, 4))],
    )
    with pytest.raises(ConfigurationError, match="image"):
        render_report([bad], "x")


# -- content --------------------------------------------------------------------------------


def section_of(page: str, anchor: str) -> str:
    match = re.search(rf'<section class="unit[^"]*" id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert match is not None, anchor
    return match.group(1)


def test_every_unit_has_its_section_and_summary_row(page: str) -> None:
    assert unit_anchor("layer4.1.conv2:17") == "unit-layer4-1-conv2-17"
    anchors = ["unit-layer4-17", "unit-output-cat", unit_anchor(hostile(20))]
    tags = parse(page)
    assert [attrs["id"] for attrs in tags.named("section")] == anchors
    links = [attrs["href"] for attrs in tags.named("a")]
    for anchor in anchors:
        assert links.count(f"#{anchor}") == 2  # the summary row and the section heading
    assert "0.875" in page  # the section's score wins over the report's


def test_same_unit_twice_gets_two_anchors() -> None:
    units = ["layer4:1", "layer4:1", "layer4-1-2"]
    page = render_report([failed_section(unit) for unit in units], "twice")
    ids = [attrs["id"] for attrs in parse(page).named("section")]
    assert ids == ["unit-layer4-1", "unit-layer4-1-2", "unit-layer4-1-2-2"]


def test_failed_reports_show_their_reason(page: str) -> None:
    failed = section_of(page, "unit-output-cat")
    assert 'class="alert"' in failed
    assert html.escape(hostile(19)) in failed
    assert 'class="unit failed"' in page
    summary = page[: page.index("<section")]
    assert summary.count('class="badge failed"') == 2
    assert html.escape(hostile(19)) in summary


def test_experiments_show_images_with_activations_and_descriptions(page: str) -> None:
    unit = section_of(page, "unit-layer4-17")
    experiment = unit[unit.index('<details class="experiment"') :]
    assert html.escape(hostile(6)) in experiment  # title
    assert html.escape(hostile(9)) in experiment and html.escape(hostile(8)) in experiment
    figures = re.findall(r"<figure.*?</figure>", experiment, re.DOTALL)
    assert len(figures) == 2
    assert '<span class="id">gen-1</span>' in figures[0] and "0.731" in figures[0]
    assert html.escape(hostile(7)) in figures[0]  # the experiment's description of gen-1
    assert '<span class="id">gen-2</span>' in figures[1] and "0.052" in figures[1]
    # Bars are relative to the unit's highest activation (exemplar #1: 1.2).
    assert 'style="width:61%"' in figures[0]


def test_images_past_the_limit_are_listed_as_text() -> None:
    section = hostile_section()
    page = render_report([section], "limit", max_images_per_experiment=1)
    experiment = page[page.index('<details class="experiment"') :]
    assert len(re.findall("<figure", experiment)) == 1
    assert "1 more image</summary><p>gen-2 0.052</p>" in experiment


def test_step_log_and_history(page: str) -> None:
    unit = section_of(page, "unit-layer4-17")
    log = unit[unit.index('<details class="steps">') :]
    assert "Step log (1 step)" in log
    for index in range(6):  # request, arguments, observation, call error, step error
        assert escaped(index) in log, index
    assert '<span class="tool">text2image</span>' in log and "0.25 s" in log
    assert '<li class="has-error">' in log
    history = unit[unit.index("Label history (drift)") : unit.index('<details class="steps">')]
    rows = re.findall(r"<tr.*?</tr>", history, re.DOTALL)
    assert len(rows) == 3  # the head and two epochs
    assert "changed" not in rows[1] and 'class="mark">changed' in rows[2]


def test_empty_run_still_renders() -> None:
    page = render_report([], "nothing yet", meta={"epoch": "0"})
    assert "No units were reported." in page
    assert '<body data-units="0">' in page


# -- writing --------------------------------------------------------------------------------


def test_write_report_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "epoch-3.html"
    assert write_report(target, [failed_section()], "first") == target
    write_report(target, [failed_section()], "second")
    assert "<title>second</title>" in target.read_text("utf-8")
    with pytest.raises(ConfigurationError):
        write_report(target, [], "third", max_images_per_experiment=-1)
    assert "<title>second</title>" in target.read_text("utf-8")
    assert sorted(path.name for path in target.parent.iterdir()) == ["epoch-3.html"]
    assert target.stat().st_mode & 0o777 == 0o644


# -- from a toolbox -------------------------------------------------------------------------


def test_sections_from_toolbox_carry_masks_activations_and_descriptions() -> None:
    model = SyntheticNeuronModel([NeuronSpec("mono", (Concept("shape", "star"),))], seed=0)
    toolbox = Toolbox(
        Subject(model, ["neurons:0"]),
        "neurons:0",
        exemplar_data=ShapesWorld(size=60, seed=3, image_size=32),
        k=4,
    )
    exemplars = toolbox.dataset_exemplars()
    toolbox.describe_images([e.id for e in exemplars])
    generated = toolbox.text2image(["a large yellow star on snow", "a large yellow square on snow"])
    toolbox.call_units([g.id for g in generated])
    toolbox.log_experiment(
        "star vs square", [g.id for g in generated], "stars drive it", "the unit detects stars"
    )
    toolbox.log_experiment("exemplars", [e.id for e in exemplars])
    report = UnitReport(
        "neurons:0", "describe_unit", "scientist", label="stars", evidence=toolbox.experiments
    )
    section = sections_from_toolbox(report, toolbox, history=[{"epoch": 0, "label": "stars"}])

    assert [image.activation for image in section.exemplars] == [e.activation for e in exemplars]
    assert all(
        image.mask is not None and image.caption.startswith("dataset item")
        for image in section.exemplars
    )
    assert all(image.description for image in section.exemplars)
    assert list(section.experiment_images) == ["gen-1", "gen-2", *[e.id for e in exemplars]]
    star = section.experiment_images["gen-1"]
    assert star.caption == "text2image 'a large yellow star on snow' (seed 0)"
    assert star.activation is not None and star.activation > 0.5
    assert section.history == [{"epoch": 0, "label": "stars"}]

    page = render_report([section], "toolbox")
    tags = parse(page)
    # Each image is encoded once however often it is shown: 4 exemplars + 2 generated.
    assert len({attrs["src"] for attrs in tags.named("img")}) == 6
    assert len(tags.named("img")) == 4 + 2 + 4
    assert f"{toolbox.images.get('gen-1').activation:.3f}" in page


# -- in a browser ---------------------------------------------------------------------------


@requires_chromium
def test_report_loads_in_headless_chromium(tmp_path: Path, sections: list[UnitSection]) -> None:
    path = write_report(tmp_path / "report.html", sections, hostile(21), {"epoch": "3"})
    run = load_page(path)
    assert run.console == [], run.console
    dom = run.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None and 'data-ready="yes"' in body.group(0), run.stderr[-2000:]
    for section in sections:
        assert f'id="{unit_anchor(section.report.unit)}"' in dom
    # The browser built no element from model text.
    assert len(parse(dom).named("script")) == 1
    assert len(parse(dom).named("img")) == 4


@requires_chromium
def test_report_screenshot_is_not_blank(tmp_path: Path, sections: list[UnitSection]) -> None:
    path = write_report(tmp_path / "report.html", sections, "screenshot", {"epoch": "3"})
    output = tmp_path / "report.png"
    run = screenshot(path, output, window_size=(1280, 2000))
    assert run.console == [], run.console
    with Image.open(output) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.var() > 0
    # More than the background: text, tables and thumbnails cover a real share of the page.
    assert (np.abs(pixels - pixels[0, 0]).sum(axis=2) > 30).mean() > 0.02
