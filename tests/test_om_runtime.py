"""The .om itself on an Ascend host: `convert --verify` (the .om against the .pb on the parity images),
`eval` and `predict --model X.om`, through the fake ais_bench (tests/fakes/ais_bench), which really runs
the model the fake atc put into the .om, and raises what the real runtime raises for an absent or busy
device and a file that does not load."""

import json
import shutil
import sys

import numpy as np
import pytest
from checkpoint_fixtures import make_trained_project
from helpers import invoke, manifest, one_error_line
from test_convert import FAKES, clean_env, make_bin, use_path  # noqa: F401  (clean_env is a fixture)

from mpltool.freeze.stage import freeze


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """A trained-looking wrn-10-1 project (37 CIFAR test images) frozen at batch 1."""
    trained = make_trained_project(tmp_path_factory.mktemp("om-project"))
    freeze(trained["dir"], parity_images=8)
    return trained


@pytest.fixture
def host(frozen, clean_env, monkeypatch, tmp_path):  # noqa: F811
    """A copy of the frozen project on a "CANN host": the fake atc on PATH, the fake ais_bench importable,
    one device."""
    project = tmp_path / "project"
    shutil.copytree(str(frozen["dir"]), str(project))
    use_path(monkeypatch, make_bin(tmp_path, "atc"))
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("FAKE_ASCEND_DEVICES", "FAKE_ASCEND_BUSY", "FAKE_OM_LOGIT_SHIFT", "ASCEND_DEVICE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKE_OM_LOG", str(tmp_path / "om-loads.jsonl"))
    return project


def no_runtime(monkeypatch):
    """Neither ais_bench nor pyACL importable (as on this machine without the fakes)."""
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface", "acl"):
        monkeypatch.setitem(sys.modules, name, None)


def loads(host):
    path = host.parent / "om-loads.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def error_line(result, code):
    """The error line of a failed command: atc's progress, or the runtime's own ACL messages, come before
    it on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def converted(host, *args):
    result = invoke("--project", host, "--json", "convert", "--soc", "Ascend910A", "--parity-images", 8, *args)
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def reference_logits(project, images, fp16):
    """The .pb in TensorFlow, on inputs (and logits) rounded to float16 when the .om computes in fp16."""
    from mpltool.graphdef import read_graph_def
    from mpltool.models.inference import FrozenModel

    record = manifest(project)["stages"]["freeze"]["outputs"]["pb"]
    x = images.astype(np.float32)
    with FrozenModel(read_graph_def(str(project / record["path"])), "pb", any_batch=True) as pb:
        if not fp16:
            return pb.predict(x)
        return pb.predict(x.astype(np.float16).astype(np.float32)).astype(np.float16).astype(np.float32)


def test_convert_verifies_the_om_against_the_pb_at_atcs_default_fp16(host, frozen):
    result, payload = converted(host)
    assert result.exit_code == 0, result.stderr
    verification = payload["verification"]
    assert verification["status"] == "verified" and verification["runtime"] == "ais_bench"
    assert verification["device_id"] == 0 and verification["images"] == 8
    assert verification["tolerance"] == 0.1 and "force_fp16 (atc's default) computes in fp16" in \
        verification["tolerance_reason"]
    # The difference recorded is the one fp16 rounding makes, recomputed here from the .pb.
    images = frozen["images"][:8]
    want = np.max(np.abs(reference_logits(host, images, True).astype(np.float64) - reference_logits(host, images, False)))
    assert verification["max_abs_logit_diff"] == pytest.approx(float(want), rel=1e-6) and want > 0
    assert [entry["shape"] for entry in loads(host)] == [[1, 32, 32, 3]]  # fed at the .om's static batch
    record = manifest(host)["stages"]["convert"]
    assert record["verification"]["status"] == "verified" and record["parity"]["passed"] is True
    assert "test_batch" in record["inputs"]
    status = invoke("--project", host, "status")
    assert "verified on device 0 through ais_bench" in status.stdout
    assert "verified on device 0 through ais_bench" in result.stderr + invoke(
        "--project", host, "convert", "--soc", "Ascend910A", "--parity-images", 8, "--force").stdout


def test_force_fp32_is_held_to_1e_3_and_matches_exactly(host):
    result, payload = converted(host, "--precision-mode", "force_fp32")
    assert result.exit_code == 0, result.stderr
    verification = payload["verification"]
    assert verification["tolerance"] == 1e-3 and "computes in fp32" in verification["tolerance_reason"]
    # fp32 on both sides: only the batch differs (1 on the .om, 8 on the .pb), so summation order alone
    assert verification["max_abs_logit_diff"] < 1e-5 and verification["top1_agreement"] == 1.0


def test_an_om_over_tolerance_is_exit_7_kept_as_rejected_and_the_verified_one_stays_recorded(host, monkeypatch):
    good, _ = converted(host, "--precision-mode", "force_fp32")
    assert good.exit_code == 0, good.stderr
    before = manifest(host)["stages"]["convert"]
    monkeypatch.setenv("FAKE_OM_LOGIT_SHIFT", "0.01")  # a conversion that moved every logit by 0.01
    bad, _ = converted(host, "--precision-mode", "force_fp32", "--force")
    line = error_line(bad, 7)
    assert "parity check failed: the .om differs from frozen/" in line and "tolerance 0.001" in line
    assert (host / "om" / "wrn-10-1-ema-step3.rejected.om").is_file()
    after = manifest(host)["stages"]["convert"]
    assert after["status"] == "failed" and after["outputs"]["om"] == before["outputs"]["om"]
    assert after["verification"] == before["verification"]  # the recorded .om is the verified one
    assert after["rejected"]["status"] == "failed" and after["rejected"]["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-5)
    assert after["rejected"]["om"] == "om/wrn-10-1-ema-step3.rejected.om"
    report = invoke("--project", host, "report")
    assert report.exit_code == 0, report.stderr
    html = (host / "report" / "index.html").read_text()
    assert "verified on device 0 through ais_bench: max |dlogit|" in html and "(tolerance 0.001: precision_mode" in html


def test_no_device_is_recorded_as_not_verified_and_verify_requires_one(host, monkeypatch):
    monkeypatch.setenv("FAKE_ASCEND_DEVICES", "0")
    result, payload = converted(host)
    assert result.exit_code == 0, result.stderr
    assert payload["verification"]["status"] == "not verified (no device)"
    assert "[507033][Error code unknown]" in payload["verification"]["reason"]
    assert "not verified (no device)" in invoke("--project", host, "status").stdout
    required = invoke("--project", host, "convert", "--soc", "Ascend910A", "--verify", "--force")
    line = error_line(required, 5)
    assert "Ascend device 0 is not usable" in line and "npu-smi info" in line


def test_a_missing_runtime_is_exit_5_with_verify_and_recorded_without(host, monkeypatch):
    no_runtime(monkeypatch)
    required = invoke("--project", host, "convert", "--soc", "Ascend910A", "--verify")
    line = one_error_line(required, 5)
    assert "neither ais_bench nor pyACL imports here" in line and "aclruntime" in line
    assert "convert" not in manifest(host)["stages"]  # refused before atc ran
    result, payload = converted(host)
    assert result.exit_code == 0 and payload["verification"]["status"] == "not verified (no runtime)"
    evaluated = invoke("--project", host, "eval", "--model", host / "om" / "wrn-10-1-ema-step3.om")
    assert "neither ais_bench nor pyACL" in one_error_line(evaluated, 5)


def test_eval_of_the_om_equals_eval_of_the_pb_and_runs_on_the_chosen_device(host, monkeypatch):
    result, _ = converted(host, "--precision-mode", "force_fp32")
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("FAKE_ASCEND_DEVICES", "2")
    monkeypatch.setenv("ASCEND_DEVICE_ID", "1")
    om_eval = invoke("--project", host, "--json", "eval", "--model", "converted")
    assert om_eval.exit_code == 0, om_eval.stderr
    pb_eval = json.loads(invoke("--project", host, "--json", "eval", "--model", "frozen").stdout)
    om_eval = json.loads(om_eval.stdout)
    assert om_eval["images"] == 37 and om_eval["source"]["kind"] == "om"
    assert (om_eval["top1"], om_eval["top5"]) == (pb_eval["top1"], pb_eval["top5"])
    assert om_eval["loss"] == pytest.approx(pb_eval["loss"], abs=1e-6)  # batch 1 vs 64: summation order
    assert loads(host)[-1]["device"] == 1


def test_predict_runs_the_om(host, tmp_path):
    from PIL import Image

    result, _ = converted(host, "--precision-mode", "force_fp32")
    assert result.exit_code == 0, result.stderr
    png = tmp_path / "cat.png"
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (40, 50, 3)).astype(np.uint8)).save(str(png))
    om_result = invoke("--project", host, "--json", "predict", "--model", host / "om" / "wrn-10-1-ema-step3.om", png)
    pb_result = invoke("--project", host, "--json", "predict", "--model", "frozen", png)
    assert om_result.exit_code == 0, om_result.stderr
    om_top = json.loads(om_result.stdout)["predictions"][0]["top"]
    pb_top = json.loads(pb_result.stdout)["predictions"][0]["top"]
    assert [p["class"] for p in om_top] == [p["class"] for p in pb_top]


def test_a_busy_device_and_a_tampered_om_are_named(host, monkeypatch):
    result, _ = converted(host, "--precision-mode", "force_fp32")
    assert result.exit_code == 0, result.stderr
    om = host / "om" / "wrn-10-1-ema-step3.om"
    monkeypatch.setenv("FAKE_ASCEND_BUSY", "1")
    busy = invoke("--project", host, "eval", "--model", om)
    line = error_line(busy, 5)
    assert "EL0005: The resources are busy." in busy.stderr  # what the runtime printed, kept for the user
    assert "Ascend device 0 is not usable" in line and "[500000]" in line
    monkeypatch.delenv("FAKE_ASCEND_BUSY")
    data = bytearray(om.read_bytes())
    data[-10] ^= 0xFF
    tampered = host / "tampered.om"
    tampered.write_bytes(bytes(data))
    line = error_line(invoke("--project", host, "eval", "--model", tampered), 3)
    assert "tampered.om does not load on device 0 ([1][ACL: invalid parameter])" in line
    om.write_bytes(bytes(data))  # the recorded one changed: its sha256 says so before any runtime is asked
    line = one_error_line(invoke("--project", host, "eval", "--model", "converted"), 4)
    assert "offline model" in line and "changed" in line


def test_pyacl_is_the_fallback_when_ais_bench_is_absent(host, frozen, monkeypatch):
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface"):
        monkeypatch.setitem(sys.modules, name, None)  # the fake pyACL (tests/fakes/acl) stays importable
    result, payload = converted(host, "--precision-mode", "force_fp32")
    assert result.exit_code == 0, result.stderr
    assert payload["verification"]["status"] == "verified" and payload["verification"]["runtime"] == "pyacl"
    assert payload["verification"]["max_abs_logit_diff"] < 1e-5
    om_eval = json.loads(invoke("--project", host, "--json", "eval", "--model", "converted").stdout)
    pb_eval = json.loads(invoke("--project", host, "--json", "eval", "--model", "frozen").stdout)
    assert (om_eval["top1"], om_eval["images"]) == (pb_eval["top1"], 37)
    assert {entry["runtime"] for entry in loads(host)} == {"pyacl"}
    monkeypatch.setenv("FAKE_ASCEND_DEVICES", "0")
    line = error_line(invoke("--project", host, "eval", "--model", "converted"), 5)
    assert "[107001][acl.rt.set_device failed]" in line
    monkeypatch.delenv("FAKE_ASCEND_DEVICES")
    tampered = host / "tampered.om"
    data = bytearray((host / "om" / "wrn-10-1-ema-step3.om").read_bytes())
    data[-3] ^= 0xFF
    tampered.write_bytes(bytes(data))
    line = error_line(invoke("--project", host, "eval", "--model", tampered), 3)
    assert "does not load on device 0 ([145000][acl.mdl.load_from_file failed])" in line
