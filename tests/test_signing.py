"""Signing a model directory offline and catching any change to it."""

import base64
import json
import stat

import pytest

from danlu.audit.signing import (
    SignatureError,
    default_key_dir,
    ensure_key_pair,
    public_key_fingerprint,
    sign_file,
    sign_model,
    verify_file,
    verify_model,
)


@pytest.fixture(autouse=True)
def key_dir(tmp_path, monkeypatch):
    """Keys go to a temporary directory, never the real home."""
    path = tmp_path / "keys"
    monkeypatch.setenv("DANLU_KEY_DIR", str(path))
    return path


@pytest.fixture
def keys(key_dir):
    return ensure_key_pair(default_key_dir())


@pytest.fixture
def model(tmp_path):
    """A fake merged-model directory: config, weights, tokenizer, a subfolder."""
    root = tmp_path / "model"
    (root / "reports").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}\n')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (root / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "reports" / "eval.json").write_text('{"ceval": 0.5}\n')
    return root


def test_key_dir_comes_from_environment(key_dir, monkeypatch):
    assert default_key_dir() == key_dir
    monkeypatch.delenv("DANLU_KEY_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(key_dir.parent / "xdg"))
    assert default_key_dir() == key_dir.parent / "xdg" / "danlu" / "keys"


def test_key_pair_created_once_private_key_0600(key_dir):
    private, public = ensure_key_pair(key_dir)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    before = (private.read_bytes(), public.read_bytes())
    assert ensure_key_pair(key_dir) == (private, public)
    assert (private.read_bytes(), public.read_bytes()) == before


def test_world_readable_private_key_refused(keys):
    keys[0].chmod(0o644)
    with pytest.raises(SignatureError, match="chmod 600"):
        ensure_key_pair(default_key_dir())


def test_signed_model_verifies_with_signature_inside(model, keys):
    signature = sign_model(model, model / "model.sig", keys[0])
    verify_model(model, signature, keys[1])
    assert "PRIVATE" not in signature.read_text()


def test_flipped_byte_fails_naming_dir_and_file(model, keys, tmp_path):
    signature = sign_model(model, tmp_path / "model.sig", keys[0])
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"model: .*changed model\.safetensors") as err:
        verify_model(model, signature, keys[1])
    assert str(model) in str(err.value) and "\n" not in str(err.value)


def test_added_and_removed_files_fail(model, keys, tmp_path):
    signature = sign_model(model, tmp_path / "model.sig", keys[0])
    (model / "extra.bin").write_bytes(b"\0")
    with pytest.raises(SignatureError, match=r"added extra\.bin"):
        verify_model(model, signature, keys[1])
    (model / "extra.bin").unlink()
    (model / "reports" / "eval.json").unlink()
    with pytest.raises(SignatureError, match=r"missing reports/eval\.json"):
        verify_model(model, signature, keys[1])


def test_wrong_public_key_fails(model, keys, tmp_path):
    signature = sign_model(model, tmp_path / "model.sig", keys[0])
    _, other_public = ensure_key_pair(tmp_path / "other-keys")
    assert public_key_fingerprint(other_public) != public_key_fingerprint(keys[1])
    with pytest.raises(SignatureError, match="another key"):
        verify_model(model, signature, other_public)


def test_missing_signature_fails(model, keys, tmp_path):
    with pytest.raises(SignatureError, match="does not exist"):
        verify_model(model, tmp_path / "absent.sig", keys[1])


def test_single_file_sign_and_verify(tmp_path, keys):
    statement = tmp_path / "provenance.json"
    statement.write_text('{"_type": "https://in-toto.io/Statement/v1"}\n')
    signature = sign_file(statement, tmp_path / "provenance.json.sig", keys[0])
    verify_file(statement, signature, keys[1])
    statement.write_text('{"_type": "https://in-toto.io/Statement/v1", "x": 1}\n')
    with pytest.raises(SignatureError, match="provenance.json: .*changed"):
        verify_file(statement, signature, keys[1])


def test_edited_bundle_fails(model, keys, tmp_path):
    """Rewriting the signed file list inside the bundle breaks its signature."""
    signature = sign_model(model, tmp_path / "model.sig", keys[0])
    bundle = json.loads(signature.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"] = payload["predicate"]["resources"][:1]
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    signature.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="not valid for public key"):
        verify_model(model, signature, keys[1])
