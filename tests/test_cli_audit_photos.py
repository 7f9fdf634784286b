"""`lightning-maia audit` as a new user runs it: a plain nn.Module in a module file of the working
folder, a folder of real photos (crops of scikit-learn's sample photos), the current folder as
import path; honest verdicts when nothing describes the photos; every option checked up front."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.chromium import load_page, requires_chromium
from helpers.photos import write_photo_folder
from PIL import Image

from lightning_maia import cli
from lightning_maia.image_folder import ImageFolder
from lightning_maia.subject import Subject, imagenet_preprocess
from lightning_maia.units import Unit

#: A user's model file: a plain nn.Module, a factory that loads its own weights, a preprocess.
MODEL_FILE = '''
import torch
from pathlib import Path
from torch import nn


class PhotoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def pretrained():
    """Loads its own weights, as torchvision/timm constructors do."""
    model = PhotoNet()
    model.load_state_dict(torch.load(Path(__file__).with_name("photo_net.pt")))
    return model


def halve(images):
    return images * 0.5
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with photos/, photo_models.py and its weights (a state_dict and a
    Lightning checkpoint of a module that held the net as ``net``)."""
    root = tmp_path_factory.mktemp("work")
    write_photo_folder(root / "photos", per_class=8, side=48)
    (root / "photo_models.py").write_text(textwrap.dedent(MODEL_FILE))
    sys.path.insert(0, str(root))
    try:
        import photo_models  # type: ignore[import-not-found]

        torch.manual_seed(1)
        model = photo_models.PhotoNet()
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("photo_models", None)
    torch.save(model.state_dict(), root / "photo_net.pt")
    lightning = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}
    torch.save(lightning, root / "lightning.ckpt")
    return root


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(workdir))])
    monkeypatch.delitem(sys.modules, "photo_models", raising=False)
    return workdir


def audit(*extra: str) -> int:
    return cli.main(["audit", "--image-folder", "photos", "--image-size", "32", "--k", "4", *extra])


def test_audit_of_a_plain_module_without_a_describer_fails_its_interpret_check(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    code = audit(
        "--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt",
        "--preprocess", "imagenet",
        "--units", "features.3:0-1", "output:flower",
        "--fail-on", "units_described<1",
        "--out", "out",
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert (
        "FAIL  interpret: 0 units described, 3 undescribed, 0 failed; no unit was described"
        in printed
    )
    assert "FAIL  units_described<1: failed: units_described = 0" in printed
    figures = json.loads((in_workdir / "out" / "figures.json").read_text())
    assert (figures["units_described"], figures["units_undescribed"]) == (0.0, 3.0)
    results = json.loads((in_workdir / "out" / "results.json").read_text())
    assert [u["report"]["status"] for u in results["units"]] == ["undescribed"] * 3
    # output:flower resolved against the folder's class names (china=0, flower=1).
    assert [u["report"]["unit"] for u in results["units"]] == [
        "features.3:0", "features.3:1", "output:1",
    ]  # fmt: skip
    # Exemplars are named by their files, and their activations are what the subject (with
    # the same preprocess) measures on those files: one input convention on every path.
    folder = ImageFolder(in_workdir / "photos", size=32)
    names = {folder.item_name(i): i for i in range(len(folder))}
    sys.path.insert(0, str(in_workdir))
    import photo_models

    model = photo_models.PhotoNet()
    model.load_state_dict(torch.load(in_workdir / "photo_net.pt"))
    subject = Subject(model, ["features.3:0"], preprocess=imagenet_preprocess())
    exemplars = results["units"][0]["exemplars"]
    assert len(exemplars) == 4
    files = [re.match(r"(\S+) \(dataset item (\d+)\)", e["caption"]) for e in exemplars]
    assert all(m is not None and m[1] in names for m in files), exemplars
    images = torch.stack([folder[names[m[1]]][0] for m in files if m is not None])
    measured = subject.call_units(images).unit_activations(Unit("features.3", 0))
    saved = torch.tensor([e["activation"] for e in exemplars])
    torch.testing.assert_close(measured, saved, atol=1e-4, rtol=1e-4)
    page = (in_workdir / "out" / "report.html").read_text()
    assert 'id="checks"' in page and "units_described&lt;1" in page
    assert "Not described:" in page and "undescribed" in page


def test_a_factory_that_loads_its_own_weights_and_a_lightning_checkpoint(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert audit("--model", "photo_models:pretrained", "--units", "features.3:0",
                 "--tasks", "interpret", "--out", "factory") == 1  # fmt: skip
    assert "FAIL  interpret: 0 units described, 1 undescribed" in capsys.readouterr().out
    assert audit("--model", "photo_models.PhotoNet", "--ckpt", "lightning.ckpt",
                 "--preprocess", "photo_models.halve",
                 "--units", "features.3:0", "--out", "ckpt") == 1  # fmt: skip
    results = json.loads((in_workdir / "ckpt" / "results.json").read_text())
    assert results["meta"]["model"] == "PhotoNet"
    assert results["meta"]["preprocess"] == "photo_models.halve"


def test_drift_gates_compare_real_descriptions_only(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt", "--units", "features.3:0"]
    assert audit(*args, "--out", "drift-base") == 1
    assert (
        audit(*args, "--out", "drift", "--baseline", "drift-base", "--fail-on", "label_drift") == 1
    )
    printed = capsys.readouterr().out
    # Two placeholders are not two equal descriptions: the gate cannot pass on them.
    assert "FAIL  label_drift: failed: label_drift was not reported by this run" in printed
    figures = json.loads((in_workdir / "drift" / "figures.json").read_text())
    assert figures["label_drift_compared"] == 0.0 and "label_drift" not in figures


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fail-on", "unit_described<1"],
         "names an unknown figure 'unit_described'; the tasks interpret report: "
         "units_described, units_undescribed"),
        (["--fail-on", "label_drift"], "label_drift needs `--baseline`"),
        (["--describer", "captoin:/models/blip"], "`--describer` names no backend 'captoin'"),
        (["--describer", "clip:/models/clip"], "give `--vocabulary`"),
        (["--describer", "caption"], "`--describer` caption needs a local captioning model"),
        (["--generator", "dall-e"], "`--generator` names no backend 'dall-e'; known:"),
        (["--tasks", "spurious", "--val-fraction", "1.5"],
         "`--val-fraction` can be a number in (0, 1)"),
        (["--preprocess", "photo_models.nothing"],
         "`--preprocess`: 'photo_models' has no 'nothing'"),
        (["--k", "0"], "`--k` can be a positive integer, got 0"),
    ],
)  # fmt: skip
def test_every_option_is_checked_before_any_work(
    in_workdir: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = ["--model", "photo_models.PhotoNet", "--units", "features.3:0", "--out", "bad"]
    assert audit(*args, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (in_workdir / "bad").exists()  # nothing ran


def test_model_and_unit_errors_are_short_and_name_the_closest(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert audit("--model", "photo_models.PhotoNt", "--units", "features.3:0") == 2
    err = capsys.readouterr().err
    assert "has no 'PhotoNt'; closest: PhotoNet" in err
    many = [f"class{i:04d}" for i in range(1000)]
    assert audit("--model", "photo_models.PhotoNet", "--units", "output:class12345",
                 "--class-names", ",".join(many), "--out", "many") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.endswith(
        "closest class names: class0345, class0245, class0235, class0234, class0145 (of 1000)\n"
    )
    assert len(err) < 400, err


def _tone_attributes(root: Path) -> Path:
    """``attributes.csv`` for the photos: each crop's tone, bright or dark beside the median
    brightness (measured from its pixels, so it cuts across both classes)."""
    files = sorted(p for p in (root / "photos").rglob("*") if p.is_file())
    brightness = [
        float(torch.tensor(list(Image.open(p).convert("L").getdata())).float().mean())
        for p in files
    ]
    middle = sorted(brightness)[len(brightness) // 2]
    lines = ["file,tone"] + [
        f"{p.relative_to(root / 'photos').as_posix()},{'bright' if b >= middle else 'dark'}"
        for p, b in zip(files, brightness, strict=True)
    ]
    (root / "attributes.csv").write_text("\n".join(lines) + "\n")
    return root / "attributes.csv"


def test_spurious_on_photos_without_attributes_fails_before_any_pass(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    code = audit(
        "--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt",
        "--units", "features.3:0-1", "--tasks", "interpret,spurious", "--out", "no_attributes",
    )  # fmt: skip
    err = capsys.readouterr().err
    # The offline agent cannot design experiments on bare photos: it says what to give, at once.
    assert code == 2, err
    assert "cannot design experiments on ImageFolder" in err
    assert "`--attributes CSV`" in err and "`--designer retrieval`" in err
    assert not (in_workdir / "no_attributes" / "interpret").exists()  # no exemplar pass ran


def test_spurious_and_flagging_run_on_an_image_folder_split(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    _tone_attributes(in_workdir)
    code = audit(
        "--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt",
        "--units", "features.3:0-1", "--tasks", "spurious,flagging", "--val-fraction", "0.5",
        "--attributes", "attributes.csv", "--designer", "retrieval",
        "--spurious-attributes", "tone",
        "--max-units", "2", "--fail-on", "flagged_rate>1", "--out", "tasks",
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS  spurious:" in printed
    assert "PASS  flagging:" in printed and "PASS  flagged_rate>1" in printed
    figures = json.loads((in_workdir / "tasks" / "figures.json").read_text())
    # Every one of the 3 x max_units head inputs is judged through the photos' tone column.
    assert (figures["units_judged"], figures["units_failed"]) == (6.0, 0.0)
    assert figures["spurious_units"] + figures["units_core"] <= 6.0
    assert 0.0 <= figures["flagged_rate"] <= 1.0 and "auroc_msp" in figures
    results = json.loads((in_workdir / "tasks" / "results.json").read_text())
    flagged = results["audit"]["flagged"]
    # Half of the 16 photos are held out and scored; the flagged ones are named by file.
    assert results["audit"]["scored_total"] == 8
    assert len(flagged) == results["audit"]["flagged_total"] == round(figures["flagged_rate"] * 8)
    folder = ImageFolder(in_workdir / "photos", size=32)
    files = {folder.item_name(i) for i in range(len(folder))}
    assert all(row["name"] in files and row["reason"] for row in flagged)
    assert [c["name"] for c in results["audit"]["checks"]] == [
        "spurious",
        "flagging",
        "flagged_rate>1",
    ]


@requires_chromium
def test_the_report_shows_checks_and_flagged_inputs_in_chromium(
    in_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    code = audit(
        "--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt",
        "--units", "features.3:0", "--tasks", "interpret,flagging",
        "--attributes", str(_tone_attributes(in_workdir)), "--designer", "retrieval",
        "--spurious-attributes", "tone",
        "--fail-on", "flagged_rate>0.99", "--out", "browser",
    )  # fmt: skip
    assert code == 0  # the tone column describes the unit; the gate holds
    # Re-rendered from the saved results, without the model: the same sections.
    assert cli.main(["report", "browser", "--out", "again.html"]) == 0
    run = load_page(in_workdir / "again.html")
    assert run.console == [], run.console
    dom = run.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None and 'data-ready="yes"' in body.group(0)
    results = json.loads((in_workdir / "browser" / "results.json").read_text())["audit"]
    checks = re.findall(r'<td class="check-name">([^<]*)</td>', dom)
    assert checks == ["interpret", "flagging", "flagged_rate&gt;0.99"]
    names = re.findall(r'<td class="input-name">([^<]*)</td>', dom)
    reasons = re.findall(r'<td class="flag-reason">([^<]*)</td>', dom)
    assert names == [row["name"] for row in results["flagged"]]
    assert names and len(reasons) == len(names) and all(reasons)  # 4 of the 16 photos
    assert all(name.endswith((".png", ".jpg")) for name in names)
    flagged_grid = dom.split('<div class="grid flagged">', 1)[1].split("</section>", 1)[0]
    assert flagged_grid.count('<figure class="thumb">') == len(names)


def test_a_registry_describer_reads_the_photos_over_http(
    in_workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_maia.testing._chat_server import ChatServer, text_reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    with ChatServer(lambda body: text_reply("orange flower petals")) as server:
        code = audit(
            "--model", "photo_models.PhotoNet", "--ckpt", "photo_net.pt",
            "--units", "features.3:0", "--describer", "vlm", "--vlm-model", "scripted",
            "--vlm-base-url", server.base_url, "--vocabulary", "flower,temple,sky",
            "--out", "vlm",
        )  # fmt: skip
        requests = server.requests
    printed = capsys.readouterr().out
    # The describer was asked about the exemplar photos (images sent as data URIs).
    assert requests and all(r.model == "scripted" for r in requests)
    images = [p for r in requests for p in r.content_parts() if p.get("type") == "image_url"]
    assert images and all(
        p["image_url"]["url"].startswith("data:image/png;base64,") for p in images
    )
    report = json.loads((in_workdir / "vlm" / "results.json").read_text())["units"][0]["report"]
    # A describer was there, so the unit is not a placeholder: it was described, or its run
    # failed and the check says why.
    assert report["status"] in ("ok", "failed")
    if report["status"] == "ok":
        assert code == 0 and "PASS  interpret: 1 units described" in printed
    else:
        assert code == 1 and f"first failure: {report['failure_reason']}" in printed
