"""The record of a run: manifests, the audit log, MLflow, signatures, provenance, exports, verify."""
