"""The plainest enricher a user would write instead: confluent-kafka, json,
maxminddb and a dict cache, GeoIP only (no reverse DNS). The yardstick of
`loadtest bench` (its `peer` pass) and of `loadtest/peer/broker_cpu.py`: the
same records on the same broker.

    python peer.py BOOTSTRAP INPUT_TOPIC GROUP CITY.mmdb ASN.mmdb \
        [--output TOPIC] [--idle-exit SECS] [--property KEY=VALUE ...]

Writes to `--output` (default `<INPUT_TOPIC>_enr`), each record to the
partition number it came from, key and headers kept. Stops by itself after
`--idle-exit` seconds without a record (default 30), or on SIGTERM or
SIGINT, flushing what it has produced first.
"""
import argparse
import json
import signal
import time

import maxminddb
from confluent_kafka import Consumer, Producer

ap = argparse.ArgumentParser()
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("group")
ap.add_argument("city")
ap.add_argument("asn")
ap.add_argument("--output")
ap.add_argument("--idle-exit", type=float, default=30.0)
ap.add_argument("--property", action="append", default=[], help="librdkafka KEY=VALUE (TLS, SASL)")
a = ap.parse_args()

city, asn = maxminddb.open_database(a.city), maxminddb.open_database(a.asn)
cache = {}


def geo(ip):
    hit = cache.get(ip)
    if hit is None:
        hit = {}
        try:
            c = city.get(ip) or {}
            a = asn.get(ip) or {}
        except ValueError:
            c, a = {}, {}
        if "country" in c:
            hit["country"] = c["country"].get("iso_code")
        if "city" in c:
            hit["city"] = c["city"]["names"].get("en")
        if "autonomous_system_number" in a:
            hit["asn"] = a["autonomous_system_number"]
            hit["as_org"] = a.get("autonomous_system_organization")
        cache[ip] = hit
    return hit


stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

common = {"bootstrap.servers": a.bootstrap}
common.update(kv.split("=", 1) for kv in a.property)
consumer = Consumer(dict(common, **{"group.id": a.group, "auto.offset.reset": "earliest",
                                    "enable.auto.commit": True}))
producer = Producer(dict(common, **{"linger.ms": 5}))
consumer.subscribe([a.topic])
out = a.output or a.topic + "_enr"
last = time.monotonic()
while not stopping and time.monotonic() - last < a.idle_exit:
    for m in consumer.consume(500, 1.0):
        if m.error():
            continue
        last = time.monotonic()
        record = json.loads(m.value())
        for field in ("id.orig_h", "id.resp_h"):
            ip = record.get(field)
            if ip:
                for k, v in geo(ip).items():
                    record[f"{field}_{k}"] = v
        while True:
            try:
                producer.produce(out, json.dumps(record), key=m.key(), partition=m.partition(),
                                 headers=m.headers())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
producer.flush(30)
consumer.close()
