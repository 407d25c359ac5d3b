#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (`kubectl kustomize DIR > FILE`) for tests/tests/deploy.rs.

  k8s-manifests.py validate FILE VERSION...   every document against the Kubernetes JSON schemas
                                              of each VERSION (strict: unknown fields fail)
  k8s-manifests.py json FILE                  the YAML documents as one JSON array, for the test

Core kinds are validated with kubernetes-validate (pinned in the Makefile's `venv` target), which
bundles the JSON schemas generated from Kubernetes' published OpenAPI, in their strict variant
(`additionalProperties: false`): a misspelled or misplaced field fails. prometheus-operator's
kinds (PodMonitor, PrometheusRule) are CRDs, not in those schemas, and no package reachable here
ships their CRD schema as data: they are checked against CRD_SCHEMAS below, a transcription of
the monitoring.coreos.com/v1 fields this project uses or may (from prometheus-operator's API
reference), equally strict. A document of any other kind fails.
"""

import json
import sys

import jsonschema
import kubernetes_validate
import yaml

STR = {"type": "string"}
STR_MAP = {"type": "object", "additionalProperties": STR}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {"key": STR, "operator": STR, "values": {"type": "array", "items": STR}},
            },
        },
    },
}
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP},
}
RELABELINGS = {"type": "array", "items": {"type": "object"}}


def crd(kind, spec):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): crd("PodMonitor", {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STR}},
            },
            "jobLabel": STR,
            "podTargetLabels": {"type": "array", "items": STR},
            "sampleLimit": {"type": "integer", "minimum": 0},
            "podMetricsEndpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": STR,
                        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "path": STR,
                        "scheme": {"enum": ["http", "https"]},
                        "params": {"type": "object"},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "relabelings": RELABELINGS,
                        "metricRelabelings": RELABELINGS,
                        "authorization": {"type": "object"},
                        "basicAuth": {"type": "object"},
                        "tlsConfig": {"type": "object"},
                        "filterRunning": {"type": "boolean"},
                    },
                },
            },
        },
    }),
    ("monitoring.coreos.com/v1", "PrometheusRule"): crd("PrometheusRule", {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer"},
                        "labels": STR_MAP,
                        "partial_response_strategy": STR,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": STR,
                                    "record": STR,
                                    "expr": {"type": ["string", "integer"]},
                                    "for": DURATION,
                                    "keep_firing_for": DURATION,
                                    "labels": STR_MAP,
                                    "annotations": STR_MAP,
                                },
                            },
                        },
                    },
                },
            },
        },
    }),
}


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def where(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')} ({doc.get('apiVersion')})"


def validate(path, versions):
    failures = 0
    docs = documents(path)
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            errors = sorted(
                jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).iter_errors(doc),
                key=lambda e: list(e.absolute_path),
            )
            for e in errors:
                failures += 1
                print(f"FAIL {where(doc)} (prometheus-operator CRD fields): "
                      f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
            if not errors:
                print(f"ok {where(doc)} (prometheus-operator CRD fields)")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(doc, v, strict=True)
                print(f"ok {where(doc)} Kubernetes {v}")
            except kubernetes_validate.ValidationError as e:
                failures += 1
                print(f"FAIL {where(doc)} Kubernetes {v}: "
                      f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures += 1
                print(f"FAIL {where(doc)}: {e.message}")
    print(f"{len(docs)} documents, {failures} failures")
    return 1 if failures or not docs else 0


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "validate":
        sys.exit(validate(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) == 3 and sys.argv[1] == "json":
        json.dump(documents(sys.argv[2]), sys.stdout)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
