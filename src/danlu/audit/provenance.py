"""SLSA provenance for the final artifacts: an in-toto Statement v1 whose
predicate is SLSA Provenance v1 (https://slsa.dev/provenance/v1).

The statement says which files were produced (subjects, by sha256), from what
(raw data, base model, code commit: resolvedDependencies), with which settings
(the resolved config: externalParameters), by whom and when (runDetails). It is
built with the in_toto_attestation package's Statement, ResourceDescriptor and
SLSA Provenance v1 protobuf types, and validated with them on build and load.

One thing the package cannot express faithfully: protobuf's Struct stores every
number as a double, so a config's `epochs: 3` would come back as `3.0` and
integers above 2**53 would be rounded. The two parameter objects are therefore
put into the predicate as the exact JSON the caller gave; all other fields come
from the protobuf messages.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI, Statement

from danlu import __version__
from danlu.audit.manifest import package_versions

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MATERIAL_KEYS = {"uri", "name", "sha256", "digest", "annotations"}


def internal_parameters() -> dict:
    """What danlu itself ran with (SLSA: set by the builder, not the user)."""
    return {"danluVersion": __version__, "python": platform.python_version(),
            "packages": package_versions()}


def build_statement(
    subjects: Iterable[tuple[str, str]],
    *,
    materials: Iterable[Mapping],
    build_type: str,
    parameters: Mapping,
    builder_id: str,
    invocation_id: str,
    started: str,
    finished: str,
    code: Mapping,
    internal: Mapping | None = None,
) -> dict:
    """The provenance statement as a JSON-ready dict.

    Arguments:
        subjects: (name, sha256 hex) of each produced file; names are unique.
        materials: inputs, each {uri and/or name, sha256 or digest {alg: hex},
            optional annotations}: raw data files, the base model.
        build_type: URI naming the kind of build (how to read the parameters).
        parameters: the resolved config, recorded exactly as given.
        builder_id: URI of what ran the build (e.g. the host's danlu workflow).
        invocation_id: identifier of this run (e.g. a UUID or MLflow run id).
        started, finished: RFC 3339 timestamps (written back in UTC).
        code: {commit, dirty, optional repo URL}, as manifest.code_version() gives.
        internal: builder-set parameters; default internal_parameters().
    """
    subject_pbs = []
    for name, sha256 in sorted(subjects):
        _check_sha256(sha256, name)
        subject_pbs.append(ResourceDescriptor(name=name, digest={"sha256": sha256}).pb)
    names = [s.name for s in subject_pbs]
    if len(set(names)) != len(names):
        raise ValueError(f"subject names repeat: {sorted({n for n in names if names.count(n) > 1})}")

    provenance = provenance_pb2.Provenance()
    definition = provenance.build_definition
    definition.build_type = build_type
    for material in [*materials, _code_material(code)]:
        rd = _material(material)
        rd.validate()
        definition.resolved_dependencies.append(rd.pb)
    run = provenance.run_details
    run.builder.id = builder_id
    run.metadata.invocation_id = invocation_id
    for field, value in (("startedOn", started), ("finishedOn", finished)):
        try:
            getattr(run.metadata, field.replace("On", "_on")).FromJsonString(value)
        except ValueError:
            raise ValueError(f"{field}: not an RFC 3339 timestamp: {value!r}") from None

    predicate = json_format.MessageToDict(provenance)
    predicate["buildDefinition"]["externalParameters"] = _exact_json(parameters, "parameters")
    predicate["buildDefinition"]["internalParameters"] = _exact_json(
        internal_parameters() if internal is None else internal, "internal")
    statement = Statement(subject_pbs, PREDICATE_TYPE, predicate)
    statement.validate()
    result = json_format.MessageToDict(statement.pb)
    result["predicate"] = predicate  # Struct turned numbers into doubles; see module docstring
    validate_statement(result)
    return result


def _check_sha256(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{what}: sha256 must be 64 lowercase hex digits, got {value!r}")


def _material(material: Mapping) -> ResourceDescriptor:
    unknown = set(material) - _MATERIAL_KEYS
    if unknown:
        raise ValueError(f"material {dict(material)}: unknown keys {sorted(unknown)}")
    digest = dict(material.get("digest") or {})
    if "sha256" in material:
        digest["sha256"] = material["sha256"]
    if "sha256" in digest:
        _check_sha256(digest["sha256"], material.get("uri") or material.get("name", "material"))
    return ResourceDescriptor(name=material.get("name", ""), uri=material.get("uri", ""),
                              digest=digest, annotations=material.get("annotations"))


def base_model_material(name: str, identity: Mapping | None) -> dict:
    """The base model as a dependency (models.model_identity): its local path or
    hub id as uri, a hub model's commit as SLSA's `gitCommit` digest (hub
    repositories are git repositories), and in the annotations the sha256 over
    all its files (a directory has no single-file sha256 to put in `digest`)
    and each file's sha256."""
    if not identity:
        return {"name": "base_model", "uri": name}
    material = {"name": "base_model", "uri": identity.get("path") or identity.get("id") or name,
                "annotations": {k: v for k, v in identity.items() if k not in ("path", "id")}}
    if identity.get("commit"):
        material["digest"] = {"gitCommit": identity["commit"]}
    return material


def _code_material(code: Mapping) -> dict:
    """The code as a dependency: SLSA's `gitCommit` digest, a `git+REPO@COMMIT`
    uri when the repository URL is known, and whether the tree was dirty (then
    the commit alone does not reproduce the code that ran)."""
    commit = code.get("commit")
    material = {"name": "danlu", "annotations": {"dirty": code.get("dirty")}}
    if commit:
        material["digest"] = {"gitCommit": commit}
        if code.get("repo"):
            material["uri"] = f"git+{code['repo']}@{commit}"
    return material


def _exact_json(value: Mapping, what: str) -> dict:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: not plain JSON ({e})") from None


def validate_statement(statement: Mapping) -> None:
    """Raise ValueError (one line) unless `statement` is an in-toto Statement v1
    that the package's validators accept and, for SLSA v1, whose predicate
    parses as the package's Provenance message (unknown fields rejected) and has
    the fields SLSA requires."""
    try:
        pb = json_format.ParseDict(statement, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
        for subject in pb.subject:
            ResourceDescriptor.copy_from_pb(subject).validate()
        if pb.predicate_type == PREDICATE_TYPE:
            provenance = json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
            for rd in provenance.build_definition.resolved_dependencies:
                ResourceDescriptor.copy_from_pb(rd).validate()
            if not provenance.build_definition.build_type:
                raise ValueError("buildDefinition.buildType is required")
            if "externalParameters" not in statement["predicate"]["buildDefinition"]:
                raise ValueError("buildDefinition.externalParameters is required")
            if not provenance.run_details.builder.id:
                raise ValueError("runDetails.builder.id is required")
    except (json_format.ParseError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a valid in-toto/SLSA statement: {' '.join(str(e).split())}") from None


def dumps_statement(statement: Mapping) -> str:
    """Canonical text: sorted keys, 2-space indent, UTF-8, trailing newline, so
    the same statement always has the same bytes (and the same signature)."""
    return json.dumps(statement, indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"


def load_statement(path: str | Path) -> dict:
    """Read and validate a statement written with dumps_statement."""
    try:
        statement = json.loads(Path(path).read_text(encoding="utf-8"))
        validate_statement(statement)
    except ValueError as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    return statement


def check_statement(statement: Mapping, files_by_name: Mapping[str, str]) -> list[str]:
    """One line per problem between the statement's subjects and the files
    found now ({name: sha256}): a changed digest, a subject whose file is
    missing, a file the statement does not list. Empty when all match."""
    if statement.get("_type") != STATEMENT_TYPE_URI:
        return [f"not an in-toto Statement v1 (_type {statement.get('_type')!r})"]
    problems = []
    subjects = {s.get("name", ""): s.get("digest", {}) for s in statement.get("subject", [])}
    for name, digest in sorted(subjects.items()):
        expected, actual = digest.get("sha256"), files_by_name.get(name)
        if expected is None:
            problems.append(f"{name}: the provenance gives no sha256 for it")
        elif actual is None:
            problems.append(f"{name}: missing (provenance sha256 {expected})")
        elif actual != expected:
            problems.append(f"{name}: sha256 {actual} differs from provenance {expected}")
    for name in sorted(files_by_name.keys() - subjects.keys()):
        problems.append(f"{name}: not listed in the provenance")
    return problems
