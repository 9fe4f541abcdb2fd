//! The README's curl walkthrough, run against the real `bonopay serve`.
//!
//! The requests are read from the README's ```` ```sh curl-walkthrough ````
//! block, so the README and this test cannot drift apart: each `curl`
//! command there is parsed (its method, URL, headers and `--data-binary
//! @file`) and sent as it is, with `$BONOPAY_KEY` set to the owner key the
//! server printed and `127.0.0.1:8080` replaced by the address of this
//! test's server (it listens on a free port). An option this parser does
//! not know fails the test, rather than being skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the fenced block tagged `sh curl-walkthrough`.
fn walkthrough_block(readme: &str) -> Vec<String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == "```sh curl-walkthrough")
        .expect("README has a ```sh curl-walkthrough block");
    lines
        .take_while(|l| l.trim() != "```")
        .map(str::to_owned)
        .collect()
}

/// Shell words of one command: quotes ('…', "…"), `\` line continuations,
/// `# comments`, and `$VAR` / `${VAR}` expansion (outside single quotes).
fn words(command: &str, var: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if !in_word => break,
            (None, ' ' | '\t' | '\n') => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\\') => {
                if let Some(n) = chars.next()
                    && n != '\n'
                {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (None | Some('"'), '$') => {
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced {
                    assert_eq!(chars.next(), Some('}'), "unclosed ${{ in {command}");
                }
                cur.push_str(&var(&name));
                in_word = true;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unclosed quote in {command}");
    if in_word {
        out.push(cur);
    }
    out
}

/// Joins continuation lines into whole commands.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block {
        cur.push_str(line);
        cur.push('\n');
        if !line.trim_end().ends_with('\\') {
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
    out
}

#[derive(Debug)]
struct Curl {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn parse_curl(words: &[String]) -> Curl {
    assert_eq!(words[0], "curl");
    let mut method = None;
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = None;
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-s" | "--silent" | "-S" | "-sS" => {}
            "-X" | "--request" => method = Some(it.next().unwrap().parse::<Method>().unwrap()),
            "-H" | "--header" => {
                let h = it.next().unwrap();
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--data-binary" | "--data" | "-d" => {
                let d = it.next().unwrap();
                let file = d.strip_prefix('@').expect("data from a file, @path");
                body = Some(std::fs::read(repo().join(file)).unwrap());
            }
            u if u.starts_with("http://") => url = Some(u.to_owned()),
            other => panic!("the walkthrough uses a curl option this test does not know: {other}"),
        }
    }
    let method = method.unwrap_or(if body.is_some() {
        Method::POST
    } else {
        Method::GET
    });
    Curl {
        method,
        url: url.expect("a URL"),
        headers,
        body,
    }
}

#[tokio::test]
async fn the_readme_walkthrough_works_against_the_real_server() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo run -q --bin bonopay -- serve\n"),
        "the README starts the server with `bonopay serve`"
    );
    let tmp = tempfile::tempdir().unwrap();
    // A fresh data directory on the embedded defaults, as on a new machine.
    let server = Server::start(&tmp.path().join("bonopay-data"), &[]);
    let key = server.owner(bonopay_server_example::datadir::DEV_MERCHANT_NIF);

    let block = walkthrough_block(&readme);
    let mut curls = Vec::new();
    for command in commands(&block) {
        let w = words(&command, &|name| {
            assert_eq!(name, "BONOPAY_KEY", "unknown variable in the walkthrough");
            key.clone()
        });
        match w.first().map(String::as_str) {
            None => {}
            Some("export") => {
                assert!(w[1].starts_with("BONOPAY_KEY="), "{w:?}");
            }
            Some("curl") => curls.push(parse_curl(&w)),
            Some(other) => panic!("unexpected command in the walkthrough: {other}"),
        }
    }
    assert_eq!(curls.len(), 3, "{curls:?}");

    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for c in &curls {
        let url = c.url.replace("http://127.0.0.1:8080", &server.base);
        assert_ne!(url, c.url, "the walkthrough talks to the default address");
        let mut req = client.request(c.method.clone(), url);
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &c.body {
            req = req.body(b.clone());
        }
        let r = req.send().await.unwrap();
        answers.push((r.status(), r.text().await.unwrap()));
    }

    // 1. Sealed: the five security elements.
    let (status, first) = &answers[0];
    assert_eq!(*status, StatusCode::CREATED, "{first}");
    let v: Value = serde_json::from_str(first).unwrap();
    let el = &v["security_elements"];
    assert_eq!(el["fiscal_number"], "1/1 FV");
    assert_eq!(el["fiscal_authority_id"], "BONOPAY-DEV-0001");
    assert_eq!(el["authentication_code"].as_str().unwrap().len(), 24);
    assert!(el["timestamp"].as_str().unwrap().starts_with("20"));
    // The README's first command runs without an e-MCF: the elements are
    // Bono Pay's own, said to be so, and never a DGI QR.
    assert_eq!(el["issuer"], "bonopay");
    assert!(el["qr"].as_str().unwrap().starts_with("BPV1:"));
    assert_eq!(v["certification"]["state"], "not_certified");
    assert_eq!(v["tax"]["dgi"]["total"], "70280.00");
    // 2. The same request: the same seal.
    assert_eq!(answers[1].0, StatusCode::OK);
    assert_eq!(&answers[1].1, first);
    // 3. The receipt.
    let (status, receipt) = &answers[2];
    assert_eq!(*status, StatusCode::OK);
    // Without BONOPAY_DGI_URL no receipt shows a DGI label or QR.
    for mark in bonopay_server_example::server::receipt::DGI_ONLY_MARKS {
        assert!(
            !receipt.contains(mark),
            "`{mark}` on a receipt not certified:\n{receipt}"
        );
    }
    assert!(receipt.contains("NON CERTIFIÉ DGI"), "{receipt}");
    let seal = &v["seal"];
    assert!(receipt.contains(seal["authentication_code_display"].as_str().unwrap()));
}

#[test]
fn the_shell_word_splitter_handles_what_the_readme_uses() {
    let var = |n: &str| format!("<{n}>");
    assert_eq!(
        words(
            "curl -s -H \"Authorization: Bearer $K\" \\\n  -H 'X: $Y' http://a/b  # note",
            &var
        ),
        [
            "curl",
            "-s",
            "-H",
            "Authorization: Bearer <K>",
            "-H",
            "X: $Y",
            "http://a/b"
        ]
    );
    assert_eq!(words("a${B}c", &var), ["a<B>c"]);
    let block: Vec<String> = ["x \\", "  y", "", "z"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(commands(&block), ["x \\\n  y\n", "z\n"]);
}
