//! Every kind of MaxMind database through `geoip.databases` and `--geoip`,
//! custom databases read through attribute paths, and ECS naming.

use std::collections::BTreeMap;
use std::path::Path;

use enricher::config::{DbAttributes, GeoIpDatabase, Naming};
use serde::Serialize;
use serde_json::json;
use test_support::mmdb;
use test_support::{Behaviour, DnsServer};

use super::*;

#[derive(Serialize)]
struct Isp<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
    isp: &'a str,
    organization: &'a str,
    mobile_country_code: &'a str,
    mobile_network_code: &'a str,
}

#[derive(Serialize)]
struct Anonymous {
    is_anonymous: bool,
    is_anonymous_vpn: bool,
    is_tor_exit_node: bool,
}

#[derive(Serialize)]
struct ConnectionType<'a> {
    connection_type: &'a str,
}

#[derive(Serialize)]
struct Domain<'a> {
    domain: &'a str,
}

#[derive(Serialize)]
struct Owner<'a> {
    name: &'a str,
    id: u32,
}

#[derive(Serialize)]
struct Site<'a> {
    owner: Owner<'a>,
    site: &'a str,
    tags: Vec<&'a str>,
    critical: bool,
    rack: BTreeMap<&'a str, u16>,
}

const NET: &str = "81.2.69.0/24";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    mmdb::write_atomically(&path, bytes).unwrap();
    path
}

fn one<T: Serialize>(database_type: &str, record: T) -> Vec<u8> {
    mmdb::db_bytes(
        database_type,
        &[(NET.parse().unwrap(), record)],
        BUILD_EPOCH,
    )
}

/// One file of each kind, MaxMind's and DB-IP's type names, and a custom one.
fn every_kind(dir: &Path) -> Vec<PathBuf> {
    vec![
        write(
            dir,
            "isp.mmdb",
            &one(
                "GeoIP2-ISP",
                Isp {
                    autonomous_system_number: 64_512,
                    autonomous_system_organization: "Example AS",
                    isp: "Example ISP",
                    organization: "Example Org Ltd",
                    mobile_country_code: "234",
                    mobile_network_code: "15",
                },
            ),
        ),
        write(
            dir,
            "anon.mmdb",
            &one(
                "GeoIP2-Anonymous-IP",
                Anonymous {
                    is_anonymous: true,
                    is_anonymous_vpn: true,
                    is_tor_exit_node: false,
                },
            ),
        ),
        write(
            dir,
            "conn.mmdb",
            &one(
                "GeoIP2-Connection-Type",
                ConnectionType {
                    connection_type: "Cable/DSL",
                },
            ),
        ),
        write(
            dir,
            "domain.mmdb",
            &one(
                "GeoIP2-Domain",
                Domain {
                    domain: "example.co.uk",
                },
            ),
        ),
        write(
            dir,
            "dbip-asn.mmdb",
            &mmdb::db_bytes(
                "DBIP-ASN-Lite (compat=GeoLite2-ASN)",
                &[(
                    NET.parse().unwrap(),
                    Isp {
                        autonomous_system_number: 64_513,
                        autonomous_system_organization: "DB-IP AS",
                        isp: "",
                        organization: "",
                        mobile_country_code: "",
                        mobile_network_code: "",
                    },
                )],
                BUILD_EPOCH,
            ),
        ),
    ]
}

fn site_db(dir: &Path, site: &str, epoch: u64) -> PathBuf {
    let record = Site {
        owner: Owner {
            name: "Team \"Blue\"",
            id: 7,
        },
        site,
        tags: vec!["dmz", "pci"],
        critical: true,
        rack: BTreeMap::from([("row", 3)]),
    };
    let bytes = mmdb::db_bytes(
        "Acme-Internal-Networks",
        &[("10.20.0.0/16".parse().unwrap(), record)],
        epoch,
    );
    write(dir, "acme-sites.mmdb", &bytes)
}

fn all_of(path: &Path) -> GeoIpDatabase {
    GeoIpDatabase {
        path: path.to_owned(),
        attributes: DbAttributes::default(),
    }
}

fn site_paths(path: &Path) -> GeoIpDatabase {
    let paths = [
        ("owner", "owner.name"),
        ("owner_id", "owner.id"),
        ("site", "site"),
        ("first_tag", "tags.0"),
        ("tags", "tags"),
        ("critical", "critical"),
        ("rack", "rack"),
        ("nowhere", "no.such.path"),
    ];
    GeoIpDatabase {
        path: path.to_owned(),
        attributes: DbAttributes::Paths(
            paths
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

#[tokio::test]
async fn every_database_type_writes_every_attribute_it_holds() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.geoip.databases = every_kind(dbs.dir.path())
        .iter()
        .map(|p| all_of(p))
        .collect();
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.0.0.1", "81.2.69.142")).await;
    let expected = json!({
        // geoip.city and geoip.asn, as before.
        "id.resp_h_country": "GB",
        "id.resp_h_city": "London",
        // ISP: AS number and organisation, then its own attributes.
        // (the DB-IP ASN file's, written after the ISP's: a JSON reader
        // keeps the last member of a name)
        "id.resp_h_asn": 64_513,
        "id.resp_h_org": "DB-IP AS",
        "id.resp_h_isp": "Example ISP",
        "id.resp_h_organization": "Example Org Ltd",
        "id.resp_h_mobile_country_code": "234",
        "id.resp_h_mobile_network_code": "15",
        "id.resp_h_is_anonymous": true,
        "id.resp_h_is_anonymous_vpn": true,
        "id.resp_h_is_tor_exit_node": false,
        "id.resp_h_connection_type": "Cable/DSL",
        "id.resp_h_domain": "example.co.uk",
    });
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(&v[key], want, "{key} in {v}");
    }
    // The first database that answers gives the provenance build time.
    assert_eq!(v["id.resp_h_geo_build"], "2023-11-14T22:13:20Z");
    let builds: Vec<&str> = core
        .enricher
        .geoip()
        .builds()
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        builds,
        [
            "city",
            "asn",
            "isp",
            "anonymous_ip",
            "connection_type",
            "domain",
            "asn_6"
        ]
    );
}

#[tokio::test]
async fn named_attributes_are_the_only_ones_written() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.geoip.city = None;
    c.geoip.asn = None;
    let files = every_kind(dbs.dir.path());
    c.geoip.databases = vec![GeoIpDatabase {
        path: files[1].clone(),
        attributes: DbAttributes::Names(vec![enricher::splice::Attr::IsTorExitNode]),
    }];
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.0.0.1", "81.2.69.142")).await;
    assert_eq!(v["id.resp_h_is_tor_exit_node"], false);
    assert!(v.get("id.resp_h_is_anonymous").is_none(), "{v}");
}

#[tokio::test]
async fn a_custom_database_writes_its_paths_as_json_and_reloads() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.geoip.scope = enricher::config::Scope::All;
    let sites = site_db(dbs.dir.path(), "lon-1", BUILD_EPOCH);
    c.geoip.databases = vec![site_paths(&sites)];
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.20.1.2", "81.2.69.142")).await;
    assert_eq!(v["id.orig_h_owner"], "Team \"Blue\"");
    assert_eq!(v["id.orig_h_owner_id"], 7);
    assert_eq!(v["id.orig_h_site"], "lon-1");
    assert_eq!(v["id.orig_h_first_tag"], "dmz");
    assert_eq!(v["id.orig_h_tags"], json!(["dmz", "pci"]));
    assert_eq!(v["id.orig_h_critical"], true);
    assert_eq!(v["id.orig_h_rack"], json!({"row": 3}));
    assert!(v.get("id.orig_h_nowhere").is_none());
    assert_eq!(v["id.resp_h_country"], "GB");
    assert!(v.get("id.resp_h_site").is_none());
    let geo = core.enricher.geoip().clone();
    assert_eq!(geo.builds().last().unwrap().0, "acme-sites");
    // A new build is swapped in; one of another type is refused.
    site_db(dbs.dir.path(), "lon-2", BUILD_EPOCH + 60);
    assert_eq!(geo.reload_changed(), 1);
    let v = enrich(&core.enricher, &conn("10.20.1.2", "81.2.69.142")).await;
    assert_eq!(v["id.orig_h_site"], "lon-2");
    mmdb::write_atomically(&sites, &one("GeoIP2-Domain", Domain { domain: "x.test" })).unwrap();
    assert_eq!(geo.reload_changed(), 0);
    let v = enrich(&core.enricher, &conn("10.20.1.2", "81.2.69.142")).await;
    assert_eq!(v["id.orig_h_site"], "lon-2");
}

#[tokio::test]
async fn a_bad_database_in_the_list_is_a_config_error_naming_its_entry() {
    let dbs = write_dbs();
    let dir = dbs.dir.path();
    let files = every_kind(dir);
    let bad = write(dir, "bad.mmdb", &mmdb::garbage(4096));
    let unknown = site_db(dir, "x", BUILD_EPOCH);
    let cases: Vec<(GeoIpDatabase, &str)> = vec![
        (all_of(&bad), "geoip.databases[1]"),
        (all_of(&dir.join("missing.mmdb")), "geoip.databases[1]"),
        (all_of(&unknown), "geoip.databases[1]"),
        (
            GeoIpDatabase {
                path: files[3].clone(),
                attributes: DbAttributes::Names(vec![enricher::splice::Attr::Isp]),
            },
            "geoip.databases[1]",
        ),
    ];
    for (db, key) in cases {
        let mut c = config(&dbs, None, None);
        c.geoip.databases = vec![all_of(&files[0]), db.clone()];
        let err = core::build(&c).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(
            err.problem.contains(&path_of(&db.path)),
            "names the file: {err}"
        );
        assert!(!err.to_string().contains('\n'));
    }
    let mut c = config(&dbs, None, None);
    c.geoip.databases = vec![site_paths(&unknown)];
    c.geoip.databases[0].attributes =
        DbAttributes::Paths(BTreeMap::from([("a\"b".to_string(), "site".to_string())]));
    let err = core::check(&c).unwrap_err();
    assert_eq!(err.key, "geoip.databases[0].attributes.a\"b", "{err}");
}

#[test]
fn the_geoip_flag_adds_a_database_and_a_bad_one_exits_64() {
    let dbs = write_dbs();
    let files = every_kind(dbs.dir.path());
    let out = super::pipe::run(
        &[
            "pipe",
            "--no-dns",
            "--geoip",
            &path_of(&files[1]),
            "--geoip",
            &path_of(&files[2]),
        ],
        format!("{}\n", conn("10.0.0.1", "81.2.69.142")).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id.resp_h_is_anonymous_vpn"], true);
    assert_eq!(v["id.resp_h_connection_type"], "Cable/DSL");
    let bad = write(dbs.dir.path(), "bad.mmdb", &mmdb::garbage(4096));
    let (good, bad) = (path_of(&files[1]), path_of(&bad));
    for command in ["pipe", "run"] {
        let mut args = vec![command, "--no-dns"];
        if command == "run" {
            args.extend(["--input-topic", "t"]);
        }
        args.extend(["--geoip", &good, "--geoip", &bad]);
        let out = super::pipe::run(&args, b"{}\n");
        assert_eq!(out.status.code(), Some(64), "{command}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("geoip.databases[1]") && stderr.contains(&bad),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn ecs_naming_writes_the_record_elastic_expects() {
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.output.naming = Naming::Ecs;
    c.output.provenance = false;
    c.dns.scope = enricher::config::Scope::Public;
    c.geoip.attributes = [
        "country",
        "country_name",
        "continent",
        "city",
        "subdivision",
        "location",
        "timezone",
        "postal",
        "asn",
        "org",
    ]
    .iter()
    .map(|a| serde_json::from_value(json!(a)).unwrap())
    .collect();
    c.geoip.databases = vec![all_of(&every_kind(dbs.dir.path())[2])];
    let core = build(&c);
    let input = r#"{"_path":"conn","uid":"C1","id.orig_h":"10.0.0.1","id.resp_h":"81.2.69.142","srcip":"89.160.20.112"}"#;
    let v = enrich(&core.enricher, input).await;
    let expected = json!({
        "_path": "conn",
        "uid": "C1",
        "id.orig_h": "10.0.0.1",
        "id.resp_h": "81.2.69.142",
        "srcip": "89.160.20.112",
        "destination.geo.country_iso_code": "GB",
        "destination.geo.country_name": "United Kingdom",
        "destination.geo.continent_code": "EU",
        "destination.geo.city_name": "London",
        "destination.geo.region_iso_code": "GB-ENG",
        "destination.geo.location": {"lat": 51.5142, "lon": -0.0931},
        "destination.geo.timezone": "Europe/London",
        "destination.geo.postal_code": "EC1A",
        // Connection type: ECS has no field for it, so it stays flat.
        "id.resp_h_connection_type": "Cable/DSL",
        "destination.domain": "host-81-2-69-142.example.test",
        "destination.registered_domain": "example.test",
        // srcip maps to source.
        "source.geo.country_iso_code": "SE",
        "source.geo.city_name": "Linköping",
        "source.as.number": 29518,
        "source.as.organization.name": "Bredband2 AB",
        "source.domain": "host-89-160-20-112.example.test",
        "source.registered_domain": "example.test",
    });
    let got = v.as_object().unwrap();
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(got.get(key), Some(want), "{key} in {v}");
    }
    assert!(got.get("destination.as.number").is_none(), "no ASN record");
    // Nothing else: Linköping's other geo members, and no flat name but
    // the connection type.
    let expected = expected.as_object().unwrap();
    for key in got.keys().filter(|k| !expected.contains_key(*k)) {
        assert!(key.starts_with("source.geo."), "{key} in {v}");
    }

    // A DNS record: the answers list is ECS's dns.resolved_ip, its
    // enrichment stays under answers_enr.
    let line = r#"{"_path":"dns","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.53","query":"x.test","answers":["x.example.test","81.2.69.142","2001:db8::1"]}"#;
    let v = enrich(&core.enricher, line).await;
    assert_eq!(v["dns.resolved_ip"], json!(["81.2.69.142", "2001:db8::1"]));
    assert_eq!(v["answers_enr"][0]["country"], "GB");
}

#[tokio::test]
async fn ecs_naming_writes_names_and_urls_where_elastic_expects_them() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.output.naming = Naming::Ecs;
    c.output.provenance = false;
    c.geoip.attributes = vec![serde_json::from_value(json!("country")).unwrap()];
    let core = build(&c);

    let dns = r#"{"_path":"dns","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.53","query":"WWW.Example.CO.UK."}"#;
    let http = r#"{"_path":"http","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.80","host":"cdn.example.com","uri":"/a/b.js?x=1","referrer":"https://news.example.org/"}"#;
    let ssl = r#"{"_path":"ssl","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.43","server_name":"api.example.net"}"#;
    let cases = [
        (
            dns,
            json!({
                "dns.question.name": "www.example.co.uk",
                "dns.question.registered_domain": "example.co.uk",
                "dns.question.top_level_domain": "co.uk",
                "dns.question.subdomain": "www",
            }),
        ),
        (
            http,
            json!({
                "url.domain": "cdn.example.com",
                "url.registered_domain": "example.com",
                "url.top_level_domain": "com",
                "url.subdomain": "cdn",
                "url.scheme": "http",
                "url.path": "/a/b.js",
                "url.query": "x=1",
                "url.extension": "js",
                // url.domain and url.registered_domain are the host's: the
                // URL's own stay flat, as does everything of the referrer
                // (ECS has no parts of http.request.referrer).
                "uri_host": "cdn.example.com",
                "uri_registered_domain": "example.com",
                "referrer_scheme": "https",
                "referrer_host": "news.example.org",
                "referrer_path": "/",
                "referrer_registered_domain": "example.org",
            }),
        ),
        (
            // No PTR lookups: the server name's parts are the destination's.
            ssl,
            json!({
                "tls.client.server_name": "api.example.net",
                "destination.registered_domain": "example.net",
                "destination.top_level_domain": "net",
                "destination.subdomain": "api",
            }),
        ),
    ];
    for (input, expected) in cases {
        let v = enrich(&core.enricher, input).await;
        let original: Value = serde_json::from_str(input).unwrap();
        let mut want = original.as_object().unwrap().clone();
        want.extend(expected.as_object().unwrap().clone());
        assert_eq!(v.as_object().unwrap(), &want, "{input}");
    }

    // With PTR names, destination.domain and destination.registered_domain
    // are the PTR name's: the server name's parts stay flat, all three.
    let dns_server = DnsServer::start(Behaviour::default()).await.unwrap();
    let mut c = config(&dbs, Some(dns_server.addr()), None);
    c.output.naming = Naming::Ecs;
    c.output.provenance = false;
    c.dns.scope = enricher::config::Scope::All;
    let core = build(&c);
    let v = enrich(&core.enricher, ssl).await;
    assert_eq!(v["tls.client.server_name"], "api.example.net", "{v}");
    assert_eq!(v["server_name_registered_domain"], "example.net", "{v}");
    assert_eq!(v["server_name_subdomain"], "api", "{v}");
    assert!(v.get("destination.subdomain").is_none(), "{v}");
}

/// Reads MaxMind's own test databases when they are on this machine
/// (`ENRICHER_MAXMIND_TEST_DATA`, default `../shared/data/geoip/test-data`
/// from the workspace); CI generates its fixtures instead.
#[tokio::test]
#[ignore = "reads MaxMind's test databases from outside the repository"]
async fn maxmind_test_databases_of_every_type_open_and_answer() {
    let dir = std::env::var("ENRICHER_MAXMIND_TEST_DATA").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/geoip/test-data"),
        PathBuf::from,
    );
    let cases = [
        (
            "GeoIP2-Anonymous-IP-Test.mmdb",
            "1.2.0.1",
            "is_anonymous",
            json!(true),
        ),
        (
            "GeoIP2-Connection-Type-Test.mmdb",
            "1.0.1.1",
            "connection_type",
            json!("Cellular"),
        ),
        (
            "GeoIP2-Domain-Test.mmdb",
            "1.2.0.1",
            "domain",
            json!("maxmind.com"),
        ),
        (
            "GeoIP2-ISP-Test.mmdb",
            "1.128.0.1",
            "isp",
            json!("Telstra Internet"),
        ),
        ("GeoLite2-ASN-Test.mmdb", "1.128.0.1", "asn", json!(1221)),
        (
            "GeoIP2-City-Test.mmdb",
            "81.2.69.142",
            "city",
            json!("London"),
        ),
        (
            "GeoIP2-Country-Test.mmdb",
            "81.2.69.142",
            "country",
            json!("GB"),
        ),
    ];
    for (file, ip, attr, want) in cases {
        let mut c = Config::default();
        c.dns.enabled = false;
        c.geoip.scope = enricher::config::Scope::All;
        c.geoip.databases = vec![all_of(&dir.join(file))];
        let core = build(&c);
        let v = enrich(&core.enricher, &conn("10.0.0.1", ip)).await;
        assert_eq!(v[format!("id.resp_h_{attr}")], want, "{file}: {v}");
    }
}
