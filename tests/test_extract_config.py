"""ExtractConfig: the CLI builds it, extract() runs it, the store records it; one-line refusals."""

import ast
import json
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

import cli
import embstore
from embstore.errors import BadInputError
from embstore.extraction import ExtractConfig, extract, pipeline
from embstore.extraction.decode import read_dicom_frames
from embstore.extraction.encoders import REGISTRY
from embstore.store.views import provenance
from embstore.testing import make_dicom, make_tiny_vjepa2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_vjepa2(tmp_path_factory.mktemp("model"))


@pytest.fixture
def tree(tmp_path):
    for i in range(3):
        folder = tmp_path / "in" / "p10" / f"p1000000{i}" / "s1"
        folder.mkdir(parents=True)
        make_dicom(folder / f"{i}.dcm", frames=4, seed=i)
    return tmp_path / "in"


def _config(tiny, **changes):
    base = {
        "checkpoint": str(tiny["original"]),
        "model": str(tiny["config"]),
        "num_frames": 4,
        "frame_step": 1,
        "num_workers": 0,
        "device": "cpu",
        "layout": "mimic-echo",
        "batch_size": 2,
    }
    return ExtractConfig(**{**base, **changes})


def test_the_store_records_the_config_and_the_decoder_in_the_run_entry(tree, tmp_path, tiny):
    config = _config(tiny, commit_every=2)
    report = extract(tree, store=tmp_path / "s.zarr", config=config)
    meta = provenance(embstore.open(tmp_path / "s.zarr"))
    entry = meta["provenance"][-1]
    assert report.added == 3 and entry["status"] == "complete" and entry["added"] == 3
    assert entry["config"] == json.loads(json.dumps(config.record()))
    assert entry["decoder"].startswith("cpu") and meta["extraction"]["decoder"].startswith("cpu")
    assert meta["extraction"]["attention"] == "sdpa" and meta["extraction"]["dtype"] == "float32"


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"shard": (3, 2)}, "shard"),
        ({"dtype": "int8"}, "dtype"),
        ({"decoder": "tpu"}, "decoder"),
        ({"pool": "grid:2"}, "pool"),
        ({"sampling": "random"}, "sampling"),
        ({"num_workers": -1}, "num_workers"),
        ({"devices": (1, 1)}, "devices"),
    ],
    ids=["frames", "shard", "dtype", "decoder", "pool", "sampling", "workers", "devices"],
)
def test_a_bad_setting_is_refused_naming_the_parameter_never_a_flag(tiny, change, name):
    with pytest.raises(BadInputError) as caught:
        _config(tiny, **change)
    assert str(caught.value).startswith(f"{name}:") and "--" not in str(caught.value)


def test_extraction_errors_never_name_command_line_flags():
    package = Path(pipeline.__file__).parent
    for file in package.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = ast.unparse(node.exc)
                assert " --" not in text and "'--" not in text, f"{file.name}: {text}"


def test_the_cli_takes_family_choices_from_the_registry_and_parses_shards():
    assert [f.value for f in cli.Family] == list(REGISTRY)
    assert cli.parse_shard("2/3") == (2, 3) and cli.parse_devices("0,1,3") == (0, 1, 3)
    assert not hasattr(pipeline, "parse_shard")  # the library takes a tuple


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_in_one_line_before_any_input(
    tree, tmp_path, tiny, monkeypatch
):
    """ViT-L weights with --model vith: refused from the checkpoint's shapes, not after a
    38 s load and a 91-line state_dict traceback."""
    wider = json.loads(Path(tiny["config"]).read_text()) | {"hidden_size": 48}
    (tmp_path / "wide.json").write_text(json.dumps(wider))

    def no_inputs(root):
        raise AssertionError("an input was read before the checkpoint was checked")

    monkeypatch.setattr(pipeline, "list_inputs", no_inputs)
    args = ["extract", str(tree), "--store", str(tmp_path / "s.zarr"), "--device", "cpu"]
    args += ["--checkpoint", str(tiny["original"]), "--model", str(tmp_path / "wide.json")]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "32-d, 2-layer" in lines[0] and "48-d" in lines[0], lines
    assert not (tmp_path / "s.zarr").exists()


def test_an_undecodable_dicom_names_the_decoder_package_pydicom_suggests(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    path = get_testdata_file("emri_small_jpeg_ls_lossless.dcm")  # 10 frames, JPEG-LS
    if get_decoder(JPEGLSLossless).is_available:  # a machine with a JPEG-LS plugin decodes it
        assert read_dicom_frames(path)[0].shape[0] == 10
        return
    shutil.copy(path, tmp_path / "x.dcm")
    with pytest.raises(BadInputError) as caught:
        read_dicom_frames(tmp_path / "x.dcm")
    message = str(caught.value)
    assert "JPEG-LS" in message and "pylibjpeg-libjpeg" in message and "pyjpegls" in message
    assert "\n" not in message and message.startswith(str(tmp_path / "x.dcm"))
