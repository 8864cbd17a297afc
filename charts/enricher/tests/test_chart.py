"""Renders charts/enricher with real Helm (helm-python-sdk) for several value
sets, validates every core Kubernetes object against the 1.30 schemas
(kubernetes-validate, strict) and checks what matters in the output.

Run through scripts/chart-test.sh, which sets up the virtualenv.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[1]
REPO = CHART.parents[1]
KUBE_VERSION = "1.30"
# Custom resources: no schema in kubernetes-validate; checked by hand below.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
SECRET_KEY = re.compile(r"password|secret|token|jaas|credential|license", re.I)

SASL_TLS = {
    "tls": {
        "enabled": True,
        "caSecret": {"name": "kafka-ca", "key": "ca.crt"},
        "clientCertSecret": {"name": "kafka-client", "certKey": "tls.crt", "keyKey": "tls.key"},
        "keyPasswordSecret": {"name": "kafka-client-key", "key": "password"},
    },
    "sasl": {
        "enabled": True,
        "mechanism": "SCRAM-SHA-512",
        "usernameSecret": {"name": "kafka-user", "key": "username"},
        "passwordSecret": {"name": "kafka-user", "key": "password"},
    },
}

VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "three-topics-keda-tls-sasl": {
        "kafka": {"brokers": "k0:9093,k1:9093,k2:9093", **SASL_TLS},
        "redis": {"urlSecret": {"name": "redis", "key": "url"}},
        "geoip": {
            "source": "geoipupdate",
            "geoipupdate": {"accountSecret": {"name": "maxmind"}},
        },
        "serviceMonitor": {"enabled": True},
        "autoscaling": {"keda": {"enabled": True, "lagThreshold": 5000}},
        "config": {"dns": {"servers": ["10.0.0.53:53"], "qps": 200}},
        "topics": [
            {"name": "bro_conn", "partitions": 12},
            {"name": "bro_dns", "partitions": 6, "outputTopic": "bro_dns_enriched",
             "autoscaling": {"keda": {"maxReplicaCount": 4, "minReplicaCount": 2}},
             "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}},
            {"name": "suricata.eve", "partitions": 3,
             "config": {"worker": {"preserve_order": True}}},
        ],
    },
    "tls-hpa-claim-custom-port": {
        "kafka": {"tls": {"enabled": True, "caSecret": {"name": "kafka-ca"}}},
        "redis": {"url": "redis://redis.cache:6379/0"},
        "geoip": {"source": "existingClaim", "existingClaim": "geoip-dbs"},
        "config": {"worker": {"metrics_addr": "0.0.0.0:9200", "shutdown_grace_ms": 40500},
                   "kafka": {"producer_properties": {"linger.ms": 10, "message.timeout.ms": 300000},
                             "consumer_properties": {"fetch.max.bytes": "52428800"}}},
        "topics": [
            {"name": "bro_http", "partitions": 8,
             "autoscaling": {"hpa": {"enabled": True, "maxReplicas": 8}}},
            {"name": "bro_ssl", "partitions": 4, "replicas": 4,
             "config": {"dns": {"enabled": False}}},
        ],
    },
    "sasl-plaintext-configmap-geoip": {
        "kafka": {"sasl": {"enabled": True, "mechanism": "PLAIN", "username": "enricher",
                           "passwordSecret": {"name": "kafka-pass"}}},
        "geoip": {"source": "configMap", "configMap": "geoip-small", "asnFile": ""},
        "dashboard": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "topics": [{"name": "fw", "partitions": 2, "replicas": 2}],
    },
    "redis-tls-password": {
        "redis": {"url": "rediss://redis.cache:6380/0",
                  "passwordSecret": {"name": "redis-pass"},
                  "tlsCaSecret": {"name": "redis-ca", "key": "ca.pem"}},
        "topics": [{"name": "bro_conn", "partitions": 2}],
    },
    "extras-dns-alerts": {
        "geoip": {"source": "geoipupdate", "geoipupdate": {"accountSecret": {"name": "maxmind"}}},
        "podAnnotations": {"example.com/owner": "netsec", "prometheus.io/path": "/other"},
        "metrics": {"prometheusAnnotations": False},
        "serviceMonitor": {"enabled": True},
        "extraEnv": [{"name": "TZ", "value": "UTC"},
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "envFrom": [{"configMapRef": {"name": "enricher-env"}, "prefix": "X_"}],
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        "initContainers": [{
            "name": "wait-for-dns", "image": "busybox:1.36.1",
            "command": ["sh", "-c", "until nslookup example.com 10.0.0.53; do sleep 2; done"],
            "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        }],
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["10.0.0.53"], "searches": ["logs.svc.cluster.local"],
                      "options": [{"name": "ndots", "value": "1"}]},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "additionalLabels": {"team": "netsec"},
            "lag": {"thresholdSeconds": 600},
            "geoipAge": {"maxAgeDays": 40, "severity": "info"},
            "extraRules": [{"alert": "EnricherDown", "expr": "up{job=\"enricher\"} == 0", "for": "5m",
                            "labels": {"severity": "critical"}}],
        },
        "tests": {"image": {"repository": "registry.example.invalid/mirror/busybox", "tag": "1.37.0"},
                  "timeoutSeconds": 3},
        "topics": [{"name": "bro_conn", "partitions": 4}, {"name": "suricata.eve", "partitions": 2}],
    },
    "intel-fetcher": {
        "intel": {
            "source": "fetcher",
            "files": ["feed.intel", "blocklist.txt"],
            "tables": [{"file": "assets.csv", "key": "cidr", "fields": ["owner", "site"]},
                       {"file": "zones.csv"}],
            "fetcher": {
                "urls": [{"name": "feed.intel", "url": "https://feeds.example.invalid/feed.intel"},
                         {"name": "blocklist.txt", "url": "https://feeds.example.invalid/list?fmt=txt&x=1"},
                         {"name": "assets.csv", "url": "http://cmdb.example.invalid/assets.csv"},
                         {"name": "zones.csv", "url": "http://cmdb.example.invalid/zones.csv"}],
                "headerSecret": {"name": "feed-token"},
                "intervalSeconds": 900,
            },
        },
        "config": {"intel": {"reload_interval_ms": 10000, "hash_fields": ["md5", "sha256"]}},
        "topics": [{"name": "bro_dns", "partitions": 2}],
    },
    "intel-configmap": {
        "intel": {"source": "configMap", "configMap": "intel-small", "files": ["feed.csv"]},
        "topics": [{"name": "bro_conn", "partitions": 2}],
    },
    # A dedicated worker for the big topic, a shared one for a list of small
    # ones (KEDA on their summed lag) and one for a pattern (HPA on lag).
    "shared-small-topics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "config": {"kafka": {"output_topic_template": "{topic}_enr"}},
        "topics": [
            {"name": "bro_conn", "partitions": 12, "autoscaling": {"keda": {"enabled": True}}},
            {"name": "small-logs", "inputTopics": ["bro_dhcp", "bro_ntp", "suricata.flow"], "partitions": 3,
             "autoscaling": {"keda": {"enabled": True, "lagThreshold": 2000}}},
            {"name": "x509", "inputTopics": ["^bro_x509.*"], "partitions": 4,
             "autoscaling": {"hpa": {"enabled": True, "lagPerReplica": 5000}}},
        ],
    },
}


def render(values: dict) -> list[dict]:
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name="fleet", namespace="logs")
    objs = []
    for path, text in sorted(out.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append(doc)
    return objs


def merged_topics(values: dict) -> list[dict]:
    if "topics" in values:
        return values["topics"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return defaults["topics"]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def worker_toml(objs: list[dict], deployment: dict) -> dict:
    vols = deployment["spec"]["template"]["spec"]["volumes"]
    cm_name = next(v["configMap"]["name"] for v in vols if v["name"] == "config")
    cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == cm_name)
    return tomllib.loads(cm["data"]["enricher.toml"])


def worker_name(objs: list[dict], deployment: dict) -> str:
    """The topics[] entry's name of a Deployment: its input topic, or a
    shared worker's name (whose TOML lists input_topics instead)."""
    kafka = worker_toml(objs, deployment)["kafka"]
    if "input_topics" in kafka:
        assert "input_topic" not in kafka and "output_topic" not in kafka and "dlq_topic" not in kafka
        return deployment["metadata"]["labels"]["enricher.example.invalid/topic"]
    return kafka["input_topic"]


def container(deployment: dict, name: str = "enricher") -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def case(request):
    values = copy.deepcopy(VALUE_SETS[request.param])
    return request.param, values, render(values)


def test_lint():
    report = helm_python.lint(str(CHART), strict=True, kube_version="v1.30.0")
    assert not report["errors"], report
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_with_values(name):
    report = helm_python.lint(str(CHART), VALUE_SETS[name], strict=True, kube_version="v1.30.0")
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_core_objects_validate(case):
    _, _, objs = case
    checked = 0
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        checked += 1
    assert checked > 0


def test_one_deployment_configmap_service_per_topic(case):
    _, values, objs = case
    topics = merged_topics(values)
    deps = by_kind(objs, "Deployment")
    assert len(deps) == len(topics)
    assert len(by_kind(objs, "Service")) == len(topics)
    worker_cms = [c for c in by_kind(objs, "ConfigMap") if "enricher.toml" in c.get("data", {})]
    assert len(worker_cms) == len(topics)
    inputs = sorted(worker_name(objs, d) for d in deps)
    assert inputs == sorted(t["name"] for t in topics)
    names = [o["metadata"]["name"] for o in objs]
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
        ks = [o["metadata"]["name"] for o in by_kind(objs, kind)]
        assert len(ks) == len(set(ks)), (kind, names)
    if values.get("podDisruptionBudget", {}).get("enabled", True):
        assert len(by_kind(objs, "PodDisruptionBudget")) == len(topics)


def test_security_context(case):
    _, _, objs = case
    for dep in by_kind(objs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "add" not in sc["capabilities"], c["name"]
            assert c.get("resources", {}).get("requests"), c["name"]
            assert c.get("resources", {}).get("limits", {}).get("memory"), c["name"]


def test_probes_and_grace_match_worker_config(case):
    _, _, objs = case
    for dep in by_kind(objs, "Deployment"):
        cfg = worker_toml(objs, dep)
        port = int(cfg["worker"]["metrics_addr"].rsplit(":", 1)[1])
        c = container(dep)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port

        def resolve(probe):
            p = probe["httpGet"]["port"]
            return ports[p] if isinstance(p, str) else p

        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert resolve(c[probe]) == port, probe
        assert c["args"][-2:] == ["--config", "/etc/enricher/enricher.toml"]
        grace = cfg["worker"].get("shutdown_grace_ms", 25000)
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == math.ceil(grace / 1000) + 5
        svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == dep["metadata"]["name"])
        assert svc["spec"]["ports"][0]["port"] == port
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_scaling_never_above_partitions(case):
    _, values, objs = case
    partitions = {}
    for dep in by_kind(objs, "Deployment"):
        cfg = worker_toml(objs, dep)
        partitions[dep["metadata"]["name"]] = next(
            t["partitions"] for t in merged_topics(values) if t["name"] == worker_name(objs, dep))
        if "replicas" in dep["spec"]:
            assert dep["spec"]["replicas"] <= partitions[dep["metadata"]["name"]]
    for so in by_kind(objs, "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]["name"]
        assert so["spec"]["maxReplicaCount"] <= partitions[target]
        assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        dep = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == target)
        assert "replicas" not in dep["spec"], "KEDA owns the replica count"
        trig = so["spec"]["triggers"][0]
        assert trig["type"] == "kafka"
        cfg = worker_toml(objs, dep)
        # A shared worker's trigger names no topic: KEDA sums its group's lag.
        assert trig["metadata"].get("topic") == cfg["kafka"].get("input_topic")
        assert trig["metadata"]["consumerGroup"] == cfg["kafka"]["group_id"]
    for hpa in by_kind(objs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["maxReplicas"] <= partitions[hpa["spec"]["scaleTargetRef"]["name"]]


def test_keda_case_has_scaledobjects():
    objs = render(copy.deepcopy(VALUE_SETS["three-topics-keda-tls-sasl"]))
    sos = by_kind(objs, "ScaledObject")
    assert len(sos) == 3
    assert sorted(s["spec"]["maxReplicaCount"] for s in sos) == [3, 4, 12]
    assert len(by_kind(objs, "TriggerAuthentication")) == 3
    assert len(by_kind(objs, "ServiceMonitor")) == 3
    assert not by_kind(objs, "HorizontalPodAutoscaler")


def test_shared_worker_next_to_a_dedicated_one():
    objs = render(copy.deepcopy(VALUE_SETS["shared-small-topics"]))
    deps = {d["metadata"]["labels"]["enricher.example.invalid/topic"]: d for d in by_kind(objs, "Deployment")}
    assert sorted(deps) == ["bro_conn", "small-logs", "x509"]
    dedicated = worker_toml(objs, deps["bro_conn"])["kafka"]
    assert (dedicated["input_topic"], dedicated["output_topic"]) == ("bro_conn", "bro_conn_enr")
    shared = worker_toml(objs, deps["small-logs"])["kafka"]
    assert shared["input_topics"] == ["bro_dhcp", "bro_ntp", "suricata.flow"]
    assert shared["group_id"] == "enricher-small-logs"
    assert shared["output_topic_template"] == "{topic}_enr"
    assert worker_toml(objs, deps["x509"])["kafka"]["input_topics"] == ["^bro_x509.*"]
    sos = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(objs, "ScaledObject")}
    assert sos[deps["bro_conn"]["metadata"]["name"]]["spec"]["triggers"][0]["metadata"]["topic"] == "bro_conn"
    shared_trig = sos[deps["small-logs"]["metadata"]["name"]]["spec"]["triggers"][0]["metadata"]
    assert "topic" not in shared_trig and shared_trig["consumerGroup"] == "enricher-small-logs"
    assert shared_trig["lagThreshold"] == "2000"
    assert sos[deps["small-logs"]["metadata"]["name"]]["spec"]["maxReplicaCount"] == 3
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deps["x509"]["metadata"]["name"]
    ext = next(m for m in hpa["spec"]["metrics"] if m["type"] == "External")["external"]
    assert ext["metric"]["name"] == "acker_consumer_lag_records"
    assert ext["metric"]["selector"]["matchLabels"] == {"enricher_topic": "x509"}
    assert ext["target"] == {"type": "AverageValue", "averageValue": "5000"}
    # Alerts and the dashboard cover the shared workers' topics by regex.
    (rule,) = by_kind(objs, "PrometheusRule")
    lag = next(r for r in rule["spec"]["groups"][0]["rules"] if r.get("alert") == "EnricherLagHigh")
    assert r"bro_conn|bro_dhcp|bro_ntp|suricata\.flow|bro_x509.*" in lag["expr"]
    dash = json.dumps([o for o in by_kind(objs, "ConfigMap") if "enricher.toml" not in o.get("data", {})])
    assert "small-logs: bro_dhcp, bro_ntp, suricata.flow" in dash


def test_shared_worker_refuses_a_fixed_output():
    with pytest.raises(Exception, match="output_topic_template"):
        render({"topics": [{"name": "small", "inputTopics": ["a", "b"], "partitions": 2, "outputTopic": "x"}]})
    # The schema refuses it first; the template would too.
    with pytest.raises(Exception, match="input_topics"):
        render({"config": {"kafka": {"input_topics": ["a"]}}})


def walk_keys(d, prefix=""):
    for k, v in d.items():
        yield f"{prefix}{k}", v
        if isinstance(v, dict):
            yield from walk_keys(v, f"{prefix}{k}.")


def test_no_secret_in_configmaps(case):
    _, _, objs = case
    for cm in by_kind(objs, "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".toml"):
                for path, value in walk_keys(tomllib.loads(text)):
                    assert not SECRET_KEY.search(path.rsplit(".", 1)[-1]) or path.endswith("sasl.username"), path
                    if isinstance(value, str) and value.startswith("redis"):
                        assert "@" not in value, path
    # Secrets reach the worker only through secretKeyRef.
    for dep in by_kind(objs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            for env in c.get("env", []):
                if SECRET_KEY.search(env["name"]) or env["name"] in (
                        "ENRICHER_REDIS__URL", "GEOIPUPDATE_ACCOUNT_ID"):
                    assert "value" not in env, env
                    assert "secretKeyRef" in env["valueFrom"], env


def test_sasl_tls_wiring():
    objs = render(copy.deepcopy(VALUE_SETS["three-topics-keda-tls-sasl"]))
    for dep in by_kind(objs, "Deployment"):
        cfg = worker_toml(objs, dep)
        props = cfg["kafka"]["properties"]
        assert props["security.protocol"] == "SASL_SSL"
        assert props["sasl.mechanism"] == "SCRAM-SHA-512"
        assert props["ssl.ca.location"] == "/etc/kafka-tls/ca/ca.crt"
        assert "redis" not in cfg or "url" not in cfg["redis"]
        env = {e["name"]: e for e in container(dep)["env"]}
        assert env["ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "kafka-user", "key": "password"}
        assert "ENRICHER_KAFKA__PROPERTIES__SASL.USERNAME" in env
        assert "ENRICHER_KAFKA__PROPERTIES__SSL.KEY.PASSWORD" in env
        assert env["ENRICHER_REDIS__URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis"
        pod = dep["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["enricher", "geoipupdate"]
        assert [c["name"] for c in pod["initContainers"]] == ["geoipupdate-init"]
        assert cfg["geoip"]["city"] == "/geoip/GeoLite2-City.mmdb"
    by_name = {worker_toml(objs, d)["kafka"]["input_topic"]: worker_toml(objs, d) for d in by_kind(objs, "Deployment")}
    assert by_name["bro_dns"]["kafka"]["output_topic"] == "bro_dns_enriched"
    assert by_name["bro_conn"]["kafka"]["output_topic"] == "bro_conn_enr"
    assert by_name["suricata.eve"]["worker"]["preserve_order"] is True
    assert by_name["bro_conn"]["dns"]["servers"] == ["10.0.0.53:53"]


def test_redis_password_and_tls_ca_wiring():
    objs = render(copy.deepcopy(VALUE_SETS["redis-tls-password"]))
    (dep,) = by_kind(objs, "Deployment")
    cfg = worker_toml(objs, dep)
    assert cfg["redis"]["url"] == "rediss://redis.cache:6380/0"
    assert cfg["redis"]["tls_ca_file"] == "/etc/redis-tls/ca/ca.pem"
    assert "password" not in cfg["redis"]
    env = {e["name"]: e for e in container(dep)["env"]}
    assert env["ENRICHER_REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-pass", "key": "password"}
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["redis-tls-ca"] == {"name": "redis-tls-ca", "mountPath": "/etc/redis-tls/ca", "readOnly": True}
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["redis-tls-ca"]["secret"] == {"secretName": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}


def test_redis_tls_ca_needs_rediss():
    _fails({"redis": {"url": "redis://redis.cache:6379/0", "tlsCaSecret": {"name": "redis-ca"}}}, "rediss://")
    _fails({"config": {"redis": {"password": "hunter2"}}}, "password")


def test_dashboard():
    objs = render(copy.deepcopy(VALUE_SETS["three-topics-keda-tls-sasl"]))
    cms = [c for c in by_kind(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(cms) == 1
    dash = json.loads(next(iter(cms[0]["data"].values())))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in ("enricher_records_total", "acker_consumer_lag_records", "acker_timestamp_diff_seconds",
                   "enricher_dns_queries_total", "enricher_dns_budget_qps", "enricher_cache_requests_total",
                   'outcome=\\"dead_lettered\\"'.replace("\\", ""), "enricher_geoip_age_seconds"):
        assert metric in exprs, metric
    table = next(p for p in dash["panels"] if p["type"] == "table")
    for flow in ("bro_conn -> bro_conn_enr", "bro_dns -> bro_dns_enriched", "suricata.eve -> suricata.eve_enr"):
        assert flow in table["targets"][0]["expr"]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert len(rows) == 3
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def _fails(values: dict, match: str):
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as err:
        render(values)
    assert re.search(match, str(err.value)), str(err.value)


def test_keda_max_above_partitions_fails():
    _fails({"topics": [{"name": "a", "partitions": 3,
                        "autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 4}}}]},
           "above its 3 partitions")


def test_hpa_max_above_partitions_fails():
    _fails({"topics": [{"name": "a", "partitions": 2,
                        "autoscaling": {"hpa": {"enabled": True, "maxReplicas": 5}}}]},
           "above its 2 partitions")


def test_replicas_above_partitions_fails():
    _fails({"topics": [{"name": "a", "partitions": 2, "replicas": 3}]}, "above its 2 partitions")


def test_hpa_and_keda_together_fail():
    _fails({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}, "not both")


def test_secret_in_properties_refused():
    _fails({"config": {"kafka": {"properties": {"sasl.password": "hunter2"}}}}, "sasl.password")
    _fails({"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "redis")


def test_sasl_needs_password_secret():
    _fails({"kafka": {"sasl": {"enabled": True, "username": "u"}}}, "passwordSecret")


def test_duplicate_topic_ids_fail():
    _fails({"topics": [{"name": "a_b", "partitions": 1}, {"name": "a.b", "partitions": 1}]}, "same name")


def test_chart_owned_keys_refused():
    _fails({"config": {"kafka": {"input_topic": "x"}}}, "input_topic")


EXTRAS = "extras-dns-alerts"
CHART_VOLUMES = {"config", "tmp", "geoip", "geoipupdate-tmp", "intel", "intel-fetch-tmp", "kafka-tls-ca",
                 "kafka-tls-client", "redis-tls-ca"}


def test_extra_pod_spec_values():
    objs = render(copy.deepcopy(VALUE_SETS[EXTRAS]))
    for dep in by_kind(objs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        env = [e["name"] for e in c["env"]]
        assert env[-2:] == ["TZ", "POD_NAME"], env
        assert c["envFrom"] == [{"configMapRef": {"name": "enricher-env"}, "prefix": "X_"}]
        assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
        assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in c["volumeMounts"]
        # The chart's own init container first: the databases are there before anything else runs.
        assert [i["name"] for i in pod["initContainers"]] == ["geoipupdate-init", "wait-for-dns"]
        assert pod["dnsPolicy"] == "None"
        assert pod["dnsConfig"] == {"nameservers": ["10.0.0.53"], "searches": ["logs.svc.cluster.local"],
                                    "options": [{"name": "ndots", "value": "1"}]}
    # Unset: nothing of the above, only the chart's volumes.
    for dep in by_kind(render({}), "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        for key in ("dnsPolicy", "dnsConfig", "initContainers"):
            assert key not in pod, key
        assert "envFrom" not in c
        assert {v["name"] for v in pod["volumes"]} <= CHART_VOLUMES
        assert {m["name"] for m in c["volumeMounts"]} <= CHART_VOLUMES


def test_user_init_containers_without_geoipupdate():
    values = {"initContainers": [{"name": "hello", "image": "busybox:1.36.1"}]}
    (dep,) = by_kind(render(values), "Deployment")
    assert [i["name"] for i in dep["spec"]["template"]["spec"]["initContainers"]] == ["hello"]


def test_extra_volume_name_clash_fails():
    _fails({"extraVolumes": [{"name": "config", "emptyDir": {}}]}, "extraVolumes.*config")


def test_dns_policy_none_needs_nameservers():
    _fails({"dnsPolicy": "None"}, "dnsConfig.nameservers")


def test_pod_annotations_and_prometheus_toggle():
    (dep,) = by_kind(render({}), "Deployment")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "9102"
    assert ann["prometheus.io/path"] == "/metrics"
    assert re.fullmatch(r"[0-9a-f]{64}", ann["checksum/config"])
    for dep in by_kind(render(copy.deepcopy(VALUE_SETS[EXTRAS])), "Deployment"):
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        # Toggle off; a podAnnotations entry stays, whatever its name.
        assert not {k for k in ann if k.startswith("prometheus.io/")} - {"prometheus.io/path"}
        assert ann["prometheus.io/path"] == "/other"
        assert ann["example.com/owner"] == "netsec"
        assert "checksum/config" in ann
    # podAnnotations win over the chart's scrape hints, without a duplicate key.
    (dep,) = by_kind(render({"podAnnotations": {"prometheus.io/scrape": "false"}}), "Deployment")
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


def test_component_is_the_role_and_the_topic_has_its_own_selector_label(case):
    _, _, objs = case
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    for dep in by_kind(objs, "Deployment"):
        sel = dep["spec"]["selector"]["matchLabels"]
        # Immutable in a Deployment, so pinned here (see the README's
        # Upgrading section for the change in 0.2.0).
        assert sorted(sel) == [
            "app.kubernetes.io/component",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/name",
            "enricher.example.invalid/topic-id",
        ]
        assert sel["app.kubernetes.io/component"] == "worker"
        topic = worker_name(objs, dep)
        assert sel["enricher.example.invalid/topic-id"] == dep["metadata"]["name"].removeprefix("fleet-enricher-")
        for labels in (dep["metadata"]["labels"], dep["spec"]["template"]["metadata"]["labels"]):
            assert labels["enricher.example.invalid/topic"] == topic
            assert sel.items() <= labels.items()
        assert services[dep["metadata"]["name"]]["spec"]["selector"] == sel
        for tsc in dep["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            assert tsc["labelSelector"]["matchLabels"] == sel
    for kind in ("PodDisruptionBudget", "ServiceMonitor"):
        for o in by_kind(objs, kind):
            assert o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
            assert o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    for pod in by_kind(objs, "Pod"):
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "test"
        assert "enricher.example.invalid/topic-id" not in labels


def test_helm_test_hook(case):
    name, values, objs = case
    pods = by_kind(objs, "Pod")
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    assert len(pods) == len(merged_topics(values)) == len(services)
    tests = values.get("tests", {})
    image = tests.get("image", {})
    tested = set()
    for pod in pods:
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        (c,) = pod["spec"]["containers"]
        assert c["image"] == f"{image.get('repository', 'busybox')}:{image.get('tag', '1.36.1')}"
        assert c["command"][:2] == ["wget", "-q"]
        assert c["command"][c["command"].index("-T") + 1] == str(tests.get("timeoutSeconds", 10))
        m = re.fullmatch(r"http://([a-z0-9-]+)\.logs\.svc:(\d+)/readyz", c["command"][-1])
        assert m, c["command"]
        svc = services[m.group(1)]
        assert int(m.group(2)) == svc["spec"]["ports"][0]["port"]
        tested.add(m.group(1))
        # The test pod is never one of the Service's endpoints.
        assert not svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["limits"]["memory"]
    assert tested == set(services), name
    assert not by_kind(render({"tests": {"enabled": False}}), "Pod")


def readme_metrics() -> set[str]:
    """Metric names of the top-level README's Metrics table."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", section, re.M))


PROMQL_WORDS = {"max", "min", "sum", "avg", "count", "rate", "changes", "time", "and", "or", "unless"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers left once label
    matchers, ranges and grouping clauses are taken out, less functions."""
    assert expr.count("(") == expr.count(")"), expr
    assert expr.count("{") == expr.count("}"), expr
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", bare)
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS


def test_prometheus_rule():
    assert not by_kind(render({}), "PrometheusRule")
    objs = render(copy.deepcopy(VALUE_SETS[EXTRAS]))
    (pr,) = by_kind(objs, "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = pr["spec"]["groups"]
    rules = {r["alert"]: r for r in group["rules"]}
    assert list(rules) == ["EnricherLagHigh", "EnricherPartitionStalled", "EnricherDnsOverBudget",
                           "EnricherGeoipDatabaseOld", "EnricherIntelSetOld", "EnricherRedisCircuitOpen",
                           "EnricherDown"]
    documented = readme_metrics()
    used = set()
    for name, rule in rules.items():
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"]), name
        assert rule["labels"]["severity"], name
        if name == "EnricherDown":
            assert "team" not in rule["labels"], "extraRules are passed through as they are"
            continue
        assert rule["labels"]["team"] == "netsec", name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        metrics = promql_metrics(rule["expr"])
        assert metrics and metrics <= documented, (name, metrics - documented)
        used |= metrics
        # Scoped to the release: its topics (dots escaped) and its namespace.
        assert "=~`bro_conn|suricata\\.eve`" in rule["expr"], rule["expr"]
        assert 'namespace="logs"' in rule["expr"], rule["expr"]
    assert used == {"acker_timestamp_diff_seconds", "acker_consumer_lag_records", "acker_committed_offset",
                    "enricher_dns_over_budget_total", "enricher_geoip_build_timestamp_seconds",
                    "enricher_intel_age_seconds", "enricher_redis_circuit_state"}
    lag = rules["EnricherLagHigh"]
    assert lag["expr"].startswith("max by (topic) (acker_timestamp_diff_seconds{")
    assert lag["expr"].endswith(") > 600") and lag["for"] == "5m"
    stalled = rules["EnricherPartitionStalled"]["expr"]
    assert "acker_consumer_lag_records{" in stalled and "> 0)" in stalled
    assert "changes(acker_committed_offset{" in stalled and "[10m])) == 0)" in stalled
    assert "and on (topic, partition)" in stalled
    dns = rules["EnricherDnsOverBudget"]
    assert "rate(enricher_dns_over_budget_total{enricher_topic=~" in dns["expr"] and dns["for"] == "15m"
    geo = rules["EnricherGeoipDatabaseOld"]
    assert geo["expr"].endswith(f") > {40 * 86400}") and geo["labels"]["severity"] == "info"
    intel = rules["EnricherIntelSetOld"]
    assert intel["expr"].startswith("max by (enricher_topic) (enricher_intel_age_seconds{")
    assert intel["expr"].endswith(f") > {72 * 3600}") and intel["for"] == "1h"
    assert 'state="open"' in rules["EnricherRedisCircuitOpen"]["expr"]
    # Prometheus' own templates reach the rule unexpanded by Helm.
    assert "{{ $labels.topic }}" in lag["annotations"]["summary"]
    assert "{{ $labels.enricher_topic }}" in dns["annotations"]["summary"]


def test_prometheus_rule_switches():
    values = {"prometheusRule": {"enabled": True, "namespaceLabel": "",
                                 "dnsOverBudget": {"enabled": False}, "redisCircuitOpen": {"enabled": False},
                                 "intelAge": {"enabled": False},
                                 "stalledPartition": {"minLagRecords": 100, "window": "30m", "for": "10m"}}}
    (pr,) = by_kind(render(values), "PrometheusRule")
    rules = {r["alert"]: r for r in pr["spec"]["groups"][0]["rules"]}
    assert set(rules) == {"EnricherLagHigh", "EnricherPartitionStalled", "EnricherGeoipDatabaseOld"}
    stalled = rules["EnricherPartitionStalled"]
    assert "> 100)" in stalled["expr"] and "[30m]" in stalled["expr"] and stalled["for"] == "10m"
    assert all("namespace=" not in r["expr"] for r in rules.values())
    assert "topic=~`bro_conn`}" in rules["EnricherLagHigh"]["expr"]


@pytest.mark.parametrize("values, match", [
    ({"prometheusRule": {"enabled": True, "treshold": 1}}, "treshold"),
    ({"prometheusRule": {"lag": {"thresholdSecs": 60}}}, "thresholdSecs"),
    ({"prometheusRule": {"lag": {"for": "5 minutes"}}}, "for"),
    ({"tests": {"image": {"repo": "busybox"}}}, "repo"),
    ({"tests": {"hookDeletePolicy": "always"}}, "hookDeletePolicy"),
    ({"metrics": {"prometheusAnnotation": False}}, "prometheusAnnotation"),
    ({"dnsPolicy": "ClusterFirstWithHostnet"}, "dnsPolicy"),
    ({"dnsConfig": {"nameserver": ["10.0.0.53"]}}, "nameserver"),
    ({"envFrom": [{"secretKeyRef": {"name": "x"}}]}, "secretKeyRef"),
    ({"extraVolumeMounts": [{"name": "x"}]}, "mountPath"),
    ({"initContainers": [{"name": "x"}]}, "image"),
    ({"extraVolume": []}, "extraVolume"),
])
def test_schema_rejects(values, match):
    with pytest.raises(helm_python.HelmValuesError) as err:
        with helm_python.Chart.load(str(CHART)) as chart:
            chart.validate_schema(values)
    assert match in str(err.value), str(err.value)


def test_readme_documents_every_value():
    """Each top-level value, and each of the alert and test settings, has a row
    in the chart README's values table."""
    text = (CHART / "README.md").read_text()
    table = text.split("\n## Values", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    rows += re.findall(r"^### .*(`\w+\[\]`)", table, re.M)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = " ".join(rows)
    for key, value in defaults.items():
        assert re.search(rf"`{key}[`.\[]", documented), key
        if key in ("prometheusRule", "tests", "metrics"):
            for sub in value:
                row = next((r for r in rows if f"`{key}.{sub}" in r or (f"`{key}." in r and f"`{sub}`" in r)), None)
                assert row, f"{key}.{sub}"


def _enricher_bin() -> str | None:
    for cand in (os.environ.get("ENRICHER_BIN"), REPO / "target/release/enricher", REPO / "target/debug/enricher",
                 shutil.which("enricher")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def test_worker_accepts_rendered_config(case, tmp_path):
    """`enricher check-config` parses each rendered TOML (unknown keys are rejected)."""
    binary = _enricher_bin()
    if binary is None:
        pytest.skip("no enricher binary built (set ENRICHER_BIN)")
    _, _, objs = case
    for cm in by_kind(objs, "ConfigMap"):
        if "enricher.toml" not in cm.get("data", {}):
            continue
        f = tmp_path / f"{cm['metadata']['name']}.toml"
        f.write_text(cm["data"]["enricher.toml"])
        dep = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == cm["metadata"]["name"])
        # The Deployment's environment, with a made-up value for each Secret.
        env = {"PATH": os.environ.get("PATH", "")}
        for e in container(dep)["env"]:
            fake = "enricher-user" if e["name"].endswith("USERNAME") else "S3cr3t-from-a-Secret-123"
            env[e["name"]] = e.get("value", fake)
        if "ENRICHER_REDIS__URL" in env:
            env["ENRICHER_REDIS__URL"] = "redis://:S3cr3t-from-a-Secret-123@redis:6379/0"
        res = subprocess.run([binary, "check-config", str(f)], capture_output=True, text=True, timeout=30, env=env)
        assert res.returncode == 0, (cm["metadata"]["name"], res.stdout, res.stderr)
        assert "S3cr3t" not in res.stdout + res.stderr, "a secret was printed unmasked"
        shown = tomllib.loads(res.stdout)
        props = shown["kafka"]["properties"]
        if "ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD" in env:
            assert "sasl.password" in props, props


def test_the_image_builds_with_the_workspaces_rust_version():
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())
    pinned = workspace["workspace"]["package"]["rust-version"]
    m = re.search(r"^ARG RUST_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert m and m.group(1) == pinned, (m and m.group(1), pinned)


def test_intel_fetcher_wiring():
    objs = render(copy.deepcopy(VALUE_SETS["intel-fetcher"]))
    (dep,) = by_kind(objs, "Deployment")
    cfg = worker_toml(objs, dep)
    assert cfg["intel"]["files"] == ["/intel/feed.intel", "/intel/blocklist.txt"]
    assert cfg["intel"]["reload_interval_ms"] == 10000
    assert cfg["intel"]["hash_fields"] == ["md5", "sha256"]
    assert cfg["tables"] == [{"path": "/intel/assets.csv", "key": "cidr", "fields": ["owner", "site"]},
                             {"path": "/intel/zones.csv"}]
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["enricher", "intel-fetch"]
    assert [c["name"] for c in pod["initContainers"]] == ["intel-fetch-init"]
    assert {"name": "intel", "mountPath": "/intel", "readOnly": True} in container(dep)["volumeMounts"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["intel"] == {"name": "intel", "emptyDir": {"sizeLimit": "256Mi"}}
    init = pod["initContainers"][0]
    sidecar = container(dep, "intel-fetch")
    for c in (init, sidecar):
        assert c["image"] == "curlimages/curl:8.11.1"
        assert {"name": "intel", "mountPath": "/intel"} in c["volumeMounts"]
        env = {e["name"]: e for e in c["env"]}
        assert env["INTEL_FETCH_HEADER"]["valueFrom"]["secretKeyRef"] == {"name": "feed-token", "key": "header"}
        assert env["INTERVAL"]["value"] == "900"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {e["name"]: e.get("value") for e in init["env"]}["MODE"] == "once"
    assert "MODE" not in {e["name"] for e in sidecar["env"]}
    script = init["command"][2]
    assert "fetch 'blocklist.txt' 'https://feeds.example.invalid/list?fmt=txt&x=1' || rc=1" in script


def test_intel_fetch_script_replaces_files_atomically_and_keeps_them_on_failure(tmp_path):
    """Runs the rendered script with a stand-in `curl` that serves from a folder."""
    objs = render(copy.deepcopy(VALUE_SETS["intel-fetcher"]))
    (dep,) = by_kind(objs, "Deployment")
    script = dep["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
    served = tmp_path / "served"
    served.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # curl -fsSL --retry 3 --max-time 300 [-H header] -o FILE URL
    (bindir / "curl").write_text(
        "#!/bin/sh\n"
        "while [ $# -gt 2 ]; do [ \"$1\" = -H ] && echo \"$2\" > \"$SERVED/.header\"; shift; done\n"
        "out=$1; url=$2; name=${url##*/}; name=${name%%\\?*}\n"
        "[ -f \"$SERVED/$name\" ] || exit 22\n"
        "cp \"$SERVED/$name\" \"$out\"\n")
    (bindir / "curl").chmod(0o755)
    dest = tmp_path / "intel"
    dest.mkdir()
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SERVED": str(served), "DIR": str(dest), "MODE": "once",
           "INTERVAL": "900", "INTEL_FETCH_HEADER": "Authorization: Bearer t"}
    for name in ("feed.intel", "list", "assets.csv", "zones.csv"):
        (served / name).write_text(f"{name} v1\n")
    res = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["assets.csv", "blocklist.txt", "feed.intel", "zones.csv"]
    assert (dest / "blocklist.txt").read_text() == "list v1\n"
    assert (served / ".header").read_text() == "Authorization: Bearer t\n"
    # A failed fetch keeps the previous file and leaves no partial one; the init container fails.
    (served / "feed.intel").unlink()
    (served / "zones.csv").write_text("zones.csv v2\n")
    res = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "feed.intel" in res.stderr and "previous file stays" in res.stderr
    assert (dest / "feed.intel").read_text() == "feed.intel v1\n"
    assert (dest / "zones.csv").read_text() == "zones.csv v2\n"
    assert sorted(p.name for p in dest.iterdir()) == ["assets.csv", "blocklist.txt", "feed.intel", "zones.csv"]


def test_intel_configmap_and_claim_mount_read_only():
    objs = render(copy.deepcopy(VALUE_SETS["intel-configmap"]))
    (dep,) = by_kind(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "intel", "configMap": {"name": "intel-small"}} in pod["volumes"]
    assert {"name": "intel", "mountPath": "/intel", "readOnly": True} in container(dep)["volumeMounts"]
    assert [c["name"] for c in pod["containers"]] == ["enricher"]
    assert "initContainers" not in pod
    cfg = worker_toml(objs, dep)
    assert cfg["intel"]["files"] == ["/intel/feed.csv"]
    assert "tables" not in cfg
    values = {"intel": {"source": "existingClaim", "existingClaim": "intel-feeds", "mountPath": "/feeds",
                        "tables": [{"file": "sites.csv"}]}}
    (dep,) = by_kind(render(values), "Deployment")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["intel"]["persistentVolumeClaim"] == {"claimName": "intel-feeds", "readOnly": True}
    cfg = worker_toml(render(values), dep)
    assert cfg["intel"]["files"] == []
    assert cfg["tables"] == [{"path": "/feeds/sites.csv"}]
    # Unset: no intel volume, no intel config.
    (dep,) = by_kind(render({}), "Deployment")
    assert "intel" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "intel" not in worker_toml(render({}), dep)


def test_intel_values_are_checked():
    _fails({"intel": {"files": ["a.txt"]}}, "need intel.source")
    _fails({"intel": {"source": "configMap", "files": ["a.txt"]}}, "needs intel.configMap")
    _fails({"intel": {"source": "existingClaim", "files": ["a.txt"]}}, "needs intel.existingClaim")
    _fails({"intel": {"source": "fetcher", "files": ["a.txt"]}}, "needs intel.fetcher.urls")
    _fails({"intel": {"source": "configMap", "configMap": "x"}}, "needs intel.files or intel.tables")
    _fails({"intel": {"source": "configMap", "configMap": "x", "files": ["a.txt"]},
            "config": {"intel": {"files": ["/etc/x"]}}}, "config.intel.files is set by the chart")
    _fails({"intel": {"source": "configMap", "configMap": "x", "files": ["a.txt"]},
            "config": {"tables": [{"path": "/etc/t.csv"}]}}, "config.tables is set by the chart")
    _fails({"intel": {"source": "configMap", "configMap": "x", "files": ["../etc/passwd"]}}, "")
    _fails({"intel": {"source": "fetcher", "files": ["a.txt"],
                      "fetcher": {"urls": [{"name": "a.txt", "url": "https://x/'; rm -rf /'"}]}}}, "")
    _fails({"extraVolumes": [{"name": "intel", "emptyDir": {}}]}, "extraVolumes.*intel")

