"""Signing model directories and single files offline, with OpenSSF model-signing.

danlu signs with an ECDSA P-256 key pair that it creates on first use in a
user-level directory (`default_key_dir()`, never inside the project), because
sigstore's keyless signing needs the internet and an OIDC login. A signature is
a sigstore bundle (JSON) holding a DSSE-signed in-toto statement that lists
every file of the directory with its sha256, so anyone with the public key can
check it without danlu:

    model_signing verify key --signature SIG --public_key KEY.pub MODEL_DIR

Using your organisation's key instead (same bundle format, same verify step):
- A key held in an HSM or smart card: `model_signing.signing.Config()
  .use_pkcs11_signer(pkcs11_uri="pkcs11:...")` (install `model-signing[pkcs11]`);
  verifiers use the matching public key as above.
- A key with an X.509 certificate from the company PKI:
  `.use_certificate_signer(private_key=..., signing_certificate=...,
  certificate_chain=[...])` (or `.use_pkcs11_certificate_signer(...)` for a key
  in an HSM); verifiers run `model_signing verify certificate
  --certificate_chain CA.pem ...`, which ties the signature to the certificate's
  identity rather than to a bare key.
- Sigstore keyless: `.use_sigstore_signer()` signs with a short-lived
  certificate bound to an OIDC identity (browser login, or ambient CI
  credentials) and records it in the public Rekor transparency log; needs the
  internet. Verifiers run `model_signing verify sigstore --identity EMAIL
  --identity_provider ISSUER ...`. Do not use it where the model's existence
  must stay confidential: the log entry is public.

Only the private key signs; it stays in the key directory (mode 0600) and is
never copied, logged or written into a bundle. Files named `.git`,
`.gitattributes`, `.github`, `.gitignore` inside a signed directory are not
covered (model-signing leaves them out on both sides by default).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

import model_signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from danlu.outputs import atomic_outputs

PRIVATE_KEY_NAME = "danlu-signing-key.pem"
PUBLIC_KEY_NAME = "danlu-signing-key.pub"
_MAX_NAMED = 5  # files named in one error line before "+N more"


class SignatureError(ValueError):
    """A signature does not match the files, the key, or cannot be read."""


def default_key_dir() -> Path:
    """`$DANLU_KEY_DIR`, else `$XDG_CONFIG_HOME/danlu/keys`, else
    `~/.config/danlu/keys`: per user, outside any project, like ~/.ssh."""
    if os.environ.get("DANLU_KEY_DIR"):
        return Path(os.environ["DANLU_KEY_DIR"]).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "danlu" / "keys"


def ensure_key_pair(key_dir: str | Path) -> tuple[Path, Path]:
    """(private, public) PEM key paths in `key_dir`, creating an ECDSA P-256
    pair on first use. P-256 is the smallest curve model-signing accepts
    (P-256/384/521) and what sigstore uses by default."""
    key_dir = Path(key_dir)
    private, public = key_dir / PRIVATE_KEY_NAME, key_dir / PUBLIC_KEY_NAME
    if not private.exists():
        if public.exists():
            # A new pair would silently orphan every signature made so far.
            raise SignatureError(f"{public} exists but its private key {private} is missing; "
                                 "restore it, or remove the public key to start a new pair")
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private_key(private)
    mode = stat.S_IMODE(private.stat().st_mode)
    if mode & 0o077:
        raise SignatureError(f"{private} is readable by others (mode {mode:o}); chmod 600 it")
    if not public.exists():
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        with atomic_outputs([public]) as (tmp,):
            tmp.write_bytes(pem)
    return private, public


def _create_private_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created 0600 from the first byte (no chmod window), then linked into place:
    # link fails if a parallel job made a key meanwhile, and then we use theirs.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def public_key_fingerprint(public_key_path: str | Path) -> str:
    """sha256 of the public key's PEM; model-signing stores the same value in
    each bundle as the key hint, so reports can name the key that signed."""
    key = serialization.load_pem_public_key(Path(public_key_path).read_bytes())
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def copy_public_key(public_key_path: str | Path, dest: str | Path) -> Path:
    """Copy the public key to `dest` (e.g. beside the signatures it checks)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public_key_path, dest)
    return dest


def sign_model(model_dir: str | Path, signature_path: str | Path, private_key_path: str | Path,
               *, ignore_paths: Iterable[str | Path] = (), password: str | None = None) -> Path:
    """Sign every file under `model_dir` (minus `ignore_paths`, relative to it)
    into the bundle `signature_path`; a bundle inside the directory is left out."""
    model_dir, signature_path = Path(model_dir), Path(signature_path)
    if not model_dir.is_dir():
        raise SignatureError(f"{model_dir}: not a directory")
    ignored = [Path(p) for p in ignore_paths]
    if signature_path.absolute().is_relative_to(model_dir.absolute()):
        ignored.append(signature_path.absolute().relative_to(model_dir.absolute()))
    return _sign(model_dir, signature_path, private_key_path, ignored, password)


def sign_file(path: str | Path, signature_path: str | Path, private_key_path: str | Path,
              *, password: str | None = None) -> Path:
    """Sign one file (e.g. the provenance statement); model-signing treats a file
    as a one-file model, so the bundle and its check are the same as for models."""
    path = Path(path)
    if not path.is_file():
        raise SignatureError(f"{path}: not a file")
    return _sign(path, Path(signature_path), private_key_path, [], password)


def _sign(target: Path, signature_path: Path, private_key_path: str | Path,
          ignored: list[Path], password: str | None) -> Path:
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=ignored)
    config = (model_signing.signing.Config()
              .use_elliptic_key_signer(private_key=private_key_path, password=password)
              .set_hashing_config(hashing))
    # Hashing happens before the temporary bundle exists, so it is never hashed;
    # a failed signing leaves no half-written bundle behind.
    with atomic_outputs([signature_path]) as (tmp,):
        config.sign(target, tmp)
    return signature_path


def verify_model(model_dir: str | Path, signature_path: str | Path,
                 public_key_path: str | Path) -> None:
    """Raise SignatureError unless `model_dir` holds exactly the files signed in
    `signature_path`, byte for byte, signed by the key of `public_key_path`."""
    _verify(Path(model_dir), Path(signature_path), Path(public_key_path))


def verify_file(path: str | Path, signature_path: str | Path, public_key_path: str | Path) -> None:
    """verify_model for a file signed with sign_file."""
    _verify(Path(path), Path(signature_path), Path(public_key_path))


def _verify(target: Path, signature_path: Path, public_key_path: Path) -> None:
    for p in (target, signature_path, public_key_path):
        if not p.exists():
            raise SignatureError(f"{target}: cannot check signature, {p} does not exist")
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key_path)
    try:
        config.verify(target, signature_path)
    except InvalidSignature:
        raise SignatureError(f"{target}: signature {signature_path} is not valid for "
                             f"public key {public_key_path} (bundle altered?)") from None
    except (ValueError, KeyError, TypeError) as e:
        message = str(e)
        if message.startswith("Key mismatch"):
            reason = f"signed with another key than {public_key_path}"
        elif message.startswith("Signature mismatch"):
            reason = _changes(target, signature_path)
        else:
            reason = f"unreadable signature {signature_path}: {' '.join(message.split())}"
        raise SignatureError(f"{target}: signature check failed: {reason}") from None


def _changes(target: Path, signature_path: Path) -> str:
    """Which files differ from the signed list, for the error line. Called only
    after model-signing has checked the bundle and found the files differ, so
    its payload is authentic; the pass/fail decision stays model-signing's."""
    bundle = json.loads(signature_path.read_text(encoding="utf-8"))
    predicate = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))["predicate"]
    signed = {r["name"]: r["digest"] for r in predicate["resources"]}
    serialization_args = predicate["serialization"]
    if serialization_args.get("method") != "files":  # shard-level bundles: not made by danlu
        return "files differ from the signed list"
    hashing = (model_signing.hashing.Config()
               .use_file_serialization(hashing_algorithm=serialization_args["hash_type"])
               .set_ignored_paths(paths=serialization_args.get("ignore_paths", [])))
    current = {rd.identifier: rd.digest.digest_hex
               for rd in hashing.hash(target).resource_descriptors()}
    if target.is_file():  # a one-file "model" names its only entry "."
        return "file content changed"
    groups = {
        "changed": sorted(n for n in signed.keys() & current.keys() if signed[n] != current[n]),
        "added": sorted(current.keys() - signed.keys()),
        "missing": sorted(signed.keys() - current.keys()),
    }
    parts = []
    for label, names in groups.items():
        if names:
            more = f" (+{len(names) - _MAX_NAMED} more)" if len(names) > _MAX_NAMED else ""
            parts.append(f"{label} {', '.join(names[:_MAX_NAMED])}{more}")
    return "; ".join(parts) or "files differ from the signed list"
