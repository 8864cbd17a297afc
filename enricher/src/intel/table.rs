//! Enrichment tables: a CSV with a header whose key column holds addresses,
//! CIDRs or domains; a value gets the attributes of its longest matching
//! row (the most specific network, or the nearest parent domain).
//!
//! ```text
//! cidr,owner,site          10.1.2.3 --> 10.1.0.0/16 --> owner=lab, site=b2
//! 10.0.0.0/8,corp,hq       10.9.9.9 --> 10.0.0.0/8  --> owner=corp, site=hq
//! 10.1.0.0/16,lab,b2
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::{IntelError, Prefixes, domain_key};

/// One loaded table.
#[derive(Debug, Default)]
pub struct Table {
    columns: Box<[Box<str>]>,
    rows: Vec<Box<[Box<str>]>>,
    nets: Prefixes<u32>,
    domains: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
}

impl Table {
    /// Reads `path`. `key` names the key column (none: the first);
    /// `fields` the columns written (empty: every other column).
    pub fn load(path: &Path, key: Option<&str>, fields: &[String]) -> Result<Self, IntelError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| IntelError::Io {
            file: file.clone(),
            error,
        })?;
        Self::parse(&file, &text, key, fields)
    }

    /// [`Table::load`] over text already read; `file` names it in errors.
    pub fn parse(
        file: &str,
        text: &str,
        key: Option<&str>,
        fields: &[String],
    ) -> Result<Self, IntelError> {
        let bad = |line: usize, problem: String| IntelError::Line {
            file: file.to_string(),
            line: line as u64,
            problem,
        };
        let mut table = Table::default();
        let mut header: Option<(usize, Vec<usize>)> = None;
        let mut cells = Vec::new();
        for (no, line) in super::parse::csv_lines(text) {
            super::parse::split_csv(line, &mut cells).map_err(|p| bad(no, p))?;
            let Some((key_at, picked)) = &header else {
                let names: Vec<&str> = cells.iter().map(|c| c.trim()).collect();
                let key_at = match key {
                    None => 0,
                    Some(k) => names
                        .iter()
                        .position(|n| n == &k)
                        .ok_or_else(|| bad(no, format!("the header has no column {k:?}")))?,
                };
                let picked: Vec<usize> = if fields.is_empty() {
                    (0..names.len()).filter(|&c| c != key_at).collect()
                } else {
                    fields
                        .iter()
                        .map(|f| {
                            names
                                .iter()
                                .position(|n| n == f)
                                .ok_or_else(|| bad(no, format!("the header has no column {f:?}")))
                        })
                        .collect::<Result<_, _>>()?
                };
                table.columns = picked.iter().map(|&c| names[c].into()).collect();
                header = Some((key_at, picked));
                continue;
            };
            let width = picked.iter().chain([key_at]).max().map_or(1, |m| m + 1);
            if cells.len() < width {
                return Err(bad(
                    no,
                    format!("{} columns, fewer than the header's", cells.len()),
                ));
            }
            let at = u32::try_from(table.rows.len()).unwrap_or(u32::MAX);
            let k = cells.get(*key_at).map(|s| s.trim()).unwrap_or_default();
            if let Ok(net) = k.parse::<IpNet>() {
                table.nets.insert(net.trunc(), at);
            } else if let Ok(ip) = k.parse::<IpAddr>() {
                table.nets.insert(IpNet::from(ip.to_canonical()), at);
            } else if super::parse::guess(k) == Ok(super::Kind::Domain) {
                if let Some(d) = domain_key(k) {
                    table.domains.entry(d.into_owned().into()).or_insert(at);
                }
            } else {
                return Err(bad(
                    no,
                    format!("the key {k:?} is not an address, a CIDR or a domain"),
                ));
            }
            let row = picked
                .iter()
                .map(|&c| cells.get(c).map(|s| s.as_str()).unwrap_or_default().into())
                .collect();
            table.rows.push(row);
        }
        if header.is_none() {
            return Err(bad(1, "no header".into()));
        }
        Ok(table)
    }

    /// The attribute columns, in the order rows hold them.
    pub fn columns(&self) -> &[Box<str>] {
        &self.columns
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of the longest network holding `ip`.
    pub fn ip(&self, ip: IpAddr) -> Option<&[Box<str>]> {
        if self.nets.is_empty() {
            return None;
        }
        let (_, &at) = self.nets.longest(ip)?;
        self.rows.get(at as usize).map(|r| &**r)
    }

    /// The row of `name` or its nearest listed parent domain.
    pub fn domain(&self, name: &str) -> Option<&[Box<str>]> {
        if self.domains.is_empty() {
            return None;
        }
        let key = domain_key(name)?;
        let mut rest: &str = &key;
        loop {
            if let Some(&at) = self.domains.get(rest) {
                return self.rows.get(at as usize).map(|r| &**r);
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &Table, ip: &str) -> Option<Vec<String>> {
        t.ip(ip.parse().expect("an address"))
            .map(|r| r.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn the_issue_example() {
        let t = Table::parse(
            "sites.csv",
            "cidr,owner,site\n10.0.0.0/8,corp,hq\n10.1.0.0/16,lab,b2\n",
            None,
            &[],
        )
        .expect("parses");
        assert_eq!(&*t.columns()[0], "owner");
        assert_eq!(row(&t, "10.1.2.3"), Some(vec!["lab".into(), "b2".into()]));
        assert_eq!(row(&t, "10.9.9.9"), Some(vec!["corp".into(), "hq".into()]));
        assert_eq!(row(&t, "11.0.0.1"), None);
    }

    #[test]
    fn key_and_fields_pick_columns_and_keys_mix() {
        let text = "owner,net,site,rack\nops,192.0.2.10,dc1,r1\nnet,192.0.2.0/24,dc1,\nweb,example.com,cloud,\n";
        let t = Table::parse("t.csv", text, Some("net"), &["site".into(), "owner".into()])
            .expect("parses");
        assert_eq!(
            row(&t, "192.0.2.10"),
            Some(vec!["dc1".into(), "ops".into()])
        );
        assert_eq!(
            row(&t, "192.0.2.11"),
            Some(vec!["dc1".into(), "net".into()])
        );
        let d = t.domain("WWW.Example.com.").expect("parent domain");
        assert_eq!(&*d[1], "web");
        assert!(t.domain("example.org").is_none());
        assert!(t.domain("com").is_none());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = Table::parse(
            "t.csv",
            "cidr,owner\n10.0.0.0/8,a\nnot a key,b\n",
            None,
            &[],
        )
        .expect_err("bad key");
        assert!(e.to_string().starts_with("t.csv line 3: the key"), "{e}");
        let e = Table::parse("t.csv", "cidr,owner\n", Some("ip"), &[]).expect_err("no column");
        assert!(e.to_string().starts_with("t.csv line 1: "), "{e}");
        let e = Table::parse("t.csv", "cidr,owner,site\n10.0.0.0/8\n", None, &[])
            .expect_err("short row");
        assert!(e.to_string().starts_with("t.csv line 2: "), "{e}");
        assert!(Table::parse("t.csv", "", None, &[]).is_err());
    }
}
