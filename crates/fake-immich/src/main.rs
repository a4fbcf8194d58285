//! `fake-immich`: runs the fake server for the VM stories and benchmarks.
//! As the stand-in for `immich-server.service` it can also write files into
//! the media location like uploads do, so the stories can see where writes
//! land when the drive goes away.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "A stand-in Immich server (follows @immich/sdk 3.2.2)")]
struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:2283")]
    listen: String,
    /// Accept this API key with every permission
    #[arg(long)]
    api_key: Option<String>,
    /// Serve only the legacy /api/jobs routes (a server before v2.4)
    #[arg(long)]
    legacy_only: bool,
    /// Behave as if IMMICH_CONFIG_FILE were set
    #[arg(long)]
    config_file: bool,
    /// Waiting jobs at start, as QUEUE=N (repeatable)
    #[arg(long, value_parser = parse_backlog)]
    backlog: Vec<(String, u64)>,
    /// Jobs each unpaused queue finishes per second
    #[arg(long, default_value_t = 0.0)]
    drain_per_sec: f64,
    /// Machine-learning stand-in: answer only GET /ping with "pong"
    #[arg(long)]
    ml: bool,
    /// Write an "upload" into this directory every --write-every seconds
    #[arg(long)]
    write_to: Option<PathBuf>,
    /// Immich's media location: its folders' `.immich` markers are checked
    /// at start (written on the first), as Immich does
    #[arg(long, value_name = "DIR")]
    media_location: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    write_every: f64,
    /// Instead of serving: write a photo-like media folder here and exit
    #[arg(long, value_name = "DIR")]
    generate_library: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    photos: u64,
    /// Average photo size in KiB
    #[arg(long, default_value_t = 200)]
    photo_kib: u64,
    #[arg(long, default_value_t = 2)]
    videos: u64,
    #[arg(long, default_value_t = 16)]
    video_mib: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead of Immich: a stand-in ntfy server on --listen, appending
    /// each published message to this JSON-lines file
    #[arg(long, value_name = "FILE")]
    ntfy_log: Option<PathBuf>,
}

fn parse_backlog(s: &str) -> Result<(String, u64), String> {
    let (q, n) = s.split_once('=').ok_or("expected QUEUE=N")?;
    Ok((q.to_owned(), n.parse().map_err(|_| "N must be a number")?))
}

fn main() {
    let a = Args::parse();
    if let Some(dir) = &a.generate_library {
        let spec = fake_immich::library::LibrarySpec {
            photos: a.photos,
            photo_bytes: a.photo_kib * 1024,
            videos: a.videos,
            video_bytes: a.video_mib * 1024 * 1024,
            seed: a.seed,
        };
        match fake_immich::library::generate(dir, &spec) {
            Ok(w) => println!("{} files, {} bytes", w.files, w.bytes),
            Err(e) => {
                eprintln!(
                    "fake-immich: cannot write the library in {}: {e}",
                    dir.display()
                );
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some(log) = &a.ntfy_log {
        if let Err(e) = fake_immich::ntfy::serve(&a.listen, log) {
            eprintln!("fake-immich: the ntfy stand-in failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if a.ml {
        ml(&a.listen);
        return;
    }
    // FAKE_IMMICH_NO_WRITES (in the unit's environment file) silences the
    // upload writer, for stories that compare the media folder byte by byte.
    if let Some(media) = &a.media_location
        && let Err(e) = fake_immich::markers::verify_or_create(media)
    {
        eprintln!("fake-immich: {e}");
        std::process::exit(1);
    }
    if let Some(dir) = a
        .write_to
        .clone()
        .filter(|_| std::env::var_os("FAKE_IMMICH_NO_WRITES").is_none())
    {
        let every = Duration::from_secs_f64(a.write_every.max(0.05));
        std::thread::spawn(move || writer(dir, every));
    }
    let opts = fake_immich::Options {
        api_key: a.api_key,
        legacy_only: a.legacy_only,
        config_file: a.config_file,
        backlog: a.backlog,
        drain_per_sec: a.drain_per_sec,
        ..Default::default()
    };
    let fake = match fake_immich::Fake::spawn(&a.listen, opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-immich: cannot listen on {}: {e}", a.listen);
            std::process::exit(1);
        }
    };
    eprintln!("fake-immich: listening on {}", fake.url());
    fake.wait();
}

fn writer(dir: PathBuf, every: Duration) {
    let mut n = 0u64;
    loop {
        n += 1;
        let p = dir.join(format!("upload-{n:06}.jpg"));
        if let Err(e) = std::fs::write(&p, format!("fake photo {n}\n")) {
            eprintln!("fake-immich: cannot write {}: {e}", p.display());
        }
        std::thread::sleep(every);
    }
}

fn ml(listen: &str) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("fake-immich --ml: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    for stream in listener.incoming().flatten() {
        let mut line = String::new();
        let mut r = BufReader::new(&stream);
        if r.read_line(&mut line).is_err() {
            continue;
        }
        let body = if line.starts_with("GET /ping") {
            "pong"
        } else {
            "not found"
        };
        let mut s = &stream;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
