//! Test fixture: a rule that misbehaves on request, so tests can check that the
//! gateway's sandbox and limits hold. The payload's `attack` field picks the
//! misbehaviour; any other message is echoed back.

use rulegate_sdk::prelude::*;
use std::hint::black_box;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    attack: String,
    #[serde(default)]
    bytes: usize,
}

#[rule]
fn hostile(msg: Message) -> Result<Vec<Output>> {
    let request: Request = msg.json()?;
    let outcome = match request.attack.as_str() {
        "spin" => loop {
            black_box(());
        },
        "allocate" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "panic" => panic!("hostile rule panicked on purpose"),
        "oversize" => vec![0x61; request.bytes],
        "read-file" => probe(std::fs::read_to_string("/etc/hostname").map(|_| ())),
        "list-dir" => probe(std::fs::read_dir(".").map(|_| ())),
        "env" => format!("{} variables", std::env::vars().count()).into_bytes(),
        "connect" => probe(std::net::TcpStream::connect("127.0.0.1:1").map(|_| ())),
        "print" => {
            println!("hostile rule writes to stdout");
            eprintln!("hostile rule writes to stderr");
            b"printed".to_vec()
        }
        _ => msg.payload,
    };
    Ok(vec![Emit::new(outcome).into()])
}

/// What an attempt to reach the outside world gave, as the output text.
fn probe(attempt: std::io::Result<()>) -> Vec<u8> {
    match attempt {
        Ok(()) => b"allowed".to_vec(),
        Err(error) => format!("denied: {error}").into_bytes(),
    }
}
