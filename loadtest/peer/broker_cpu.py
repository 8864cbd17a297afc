"""CPU per record of the worker and of the Python peer on any broker.

Feeds N real Zeek ssl records into a fresh topic of P partitions, starts the
worker (`enricher run`, GeoIP City + ASN, no DNS) or the peer (`peer.py`) as
a process of its own, waits until all N are in the output topic, and prints
one JSON line: wall time, records/s, the process's CPU per record, and its
busiest threads. Needs confluent-kafka and maxminddb (pip).

    python broker_cpu.py --brokers 127.0.0.1:9092 --enricher target/release/enricher \
        --shared ../shared [--records 200000] [--partitions 8] [--peer] [--env K=V ...]
"""
import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--brokers", required=True)
ap.add_argument("--enricher", default="target/release/enricher")
ap.add_argument("--shared", default="../shared")
ap.add_argument("--records", type=int, default=200_000)
ap.add_argument("--partitions", type=int, default=8)
ap.add_argument("--peer", action="store_true", help="run the Python peer instead of the worker")
ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker")
a = ap.parse_args()

tag = str(int(time.time() * 1000) % 10**9)
topic, out = f"bro_ssl_{tag}", f"bro_ssl_{tag}_enr"
admin = AdminClient({"bootstrap.servers": a.brokers})
for f in admin.create_topics([NewTopic(t, a.partitions, 1) for t in (topic, out, topic + "_dlq")]).values():
    f.result()
lines = [l.rstrip(b"\n") for l in gzip.open(f"{a.shared}/data/zeek/json/ssl.json.gz")]
feed = Producer({"bootstrap.servers": a.brokers, "linger.ms": 20})
for i in range(a.records):
    while True:
        try:
            feed.produce(topic, lines[i % len(lines)], partition=i % a.partitions)
            break
        except BufferError:
            feed.poll(0.05)
feed.flush(120)

geo = f"{a.shared}/data/geoip/test-data"
city, asn = f"{geo}/GeoIP2-City-Test.mmdb", f"{geo}/GeoLite2-ASN-Test.mmdb"
group = f"g-{tag}"
if a.peer:
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer.py")
    cmd, env = [sys.executable, peer, a.brokers, topic, group, city, asn], dict(os.environ)
else:
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(f'[geoip]\ncity = "{city}"\nasn = "{asn}"\n[dns]\nenabled = false\n')
    cfg.close()
    cmd = [a.enricher, "run", "--brokers", a.brokers, "--group", group, "--input-topic", topic,
           "--config", cfg.name, "--metrics-addr", "127.0.0.1:0"]
    env = dict(os.environ, ENRICHER_LOG="warn")
    env.update(kv.split("=", 1) for kv in a.env)

tick = os.sysconf("SC_CLK_TCK")


def cpu(stat_path):
    fields = open(stat_path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


started = time.time()
proc = subprocess.Popen(cmd, env=env)
reader = Consumer({"bootstrap.servers": a.brokers, "group.id": f"r-{tag}"})
done = 0
while done < a.records and time.time() - started < 900:
    time.sleep(0.2)
    done = sum(reader.get_watermark_offsets(TopicPartition(out, p), timeout=10)[1]
               for p in range(a.partitions))
wall = time.time() - started
used = cpu(f"/proc/{proc.pid}/stat")
threads = {}
for tid in os.listdir(f"/proc/{proc.pid}/task"):
    name = open(f"/proc/{proc.pid}/task/{tid}/comm").read().strip()
    threads[name] = threads.get(name, 0) + cpu(f"/proc/{proc.pid}/task/{tid}/stat")
proc.send_signal(signal.SIGTERM)
proc.wait(60)
print(json.dumps({
    "pass": "peer" if a.peer else "worker", "records": a.records, "out": done,
    "wall_s": round(wall, 1), "records_per_s": round(done / wall),
    "cpu_us_per_record": round(used / max(done, 1) * 1e6, 1),
    "threads_cpu_s": {k: round(v, 2) for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.05},
    "env": a.env,
}))
