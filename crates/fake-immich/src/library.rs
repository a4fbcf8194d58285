//! A generated, photo-like media folder for backup tests and benchmarks:
//! real (tiny, grey) baseline JPEGs with EXIF (camera, date) and random
//! payload in comment segments so that they do not compress or deduplicate,
//! laid out as Immich lays out its media folder, plus a few large "videos".

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone)]
pub struct LibrarySpec {
    pub photos: u64,
    /// Average photo size; sizes vary from half to one and a half times it.
    pub photo_bytes: u64,
    pub videos: u64,
    pub video_bytes: u64,
    pub seed: u64,
}

/// Files and bytes written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
}

/// xorshift64*: fast, seedable, good enough for incompressible filler.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    assert!(
        body.len() + 2 <= 0xFFFF,
        "JPEG segments hold at most 65533 bytes"
    );
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// The EXIF block (TIFF, little-endian): Make, Model, Orientation and
/// DateTimeOriginal in the Exif sub-IFD.
fn exif(make: &str, model: &str, datetime: &str) -> Vec<u8> {
    let ascii = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let (make, model, dt) = (ascii(make), ascii(model), ascii(datetime));
    // Layout: header(8) | IFD0: 2 + 4*12 + 4 | Exif IFD: 2 + 1*12 + 4 | data
    let ifd0 = 8u32;
    let exif_ifd = ifd0 + 2 + 4 * 12 + 4;
    let mut data_at = exif_ifd + 2 + 12 + 4;
    let mut t = Vec::new();
    t.extend_from_slice(b"II*\0");
    t.extend_from_slice(&ifd0.to_le_bytes());
    let entry = |t: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    };
    let make_at = data_at;
    data_at += make.len() as u32;
    let model_at = data_at;
    data_at += model.len() as u32;
    let dt_at = data_at;
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x010F, 2, make.len() as u32, make_at);
    entry(&mut t, 0x0110, 2, model.len() as u32, model_at);
    entry(&mut t, 0x0112, 3, 1, 1);
    entry(&mut t, 0x8769, 4, 1, exif_ifd);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut t, 0x9003, 2, dt.len() as u32, dt_at);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&make);
    t.extend_from_slice(&model);
    t.extend_from_slice(&dt);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&t);
    app1
}

/// A valid baseline JPEG of a mid-grey `width`×`height` image with EXIF,
/// padded with random comment segments to about `target` bytes.
pub fn jpeg(width: u16, height: u16, datetime: &str, target: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    segment(
        &mut out,
        0xE1,
        &exif("ImmichAppliance", "Test Camera 1", datetime),
    );
    // Quantisation table 0: all ones.
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1u8; 64]);
    segment(&mut out, 0xDB, &dqt);
    // Baseline, 8-bit, one component, no subsampling.
    let mut sof = vec![8];
    sof.extend_from_slice(&height.to_be_bytes());
    sof.extend_from_slice(&width.to_be_bytes());
    sof.extend_from_slice(&[1, 1, 0x11, 0]);
    segment(&mut out, 0xC0, &sof);
    // One-symbol Huffman tables: DC category 0 and AC end-of-block, each
    // coded as the single bit 0.
    for class_id in [0x00u8, 0x10] {
        let mut dht = vec![class_id, 1];
        dht.extend_from_slice(&[0u8; 15]);
        dht.push(0x00);
        segment(&mut out, 0xC4, &dht);
    }
    // Random filler so that photos are as big, and as incompressible, as
    // real ones.
    let blocks = u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8));
    let scan_bytes = (2 * blocks).div_ceil(8) as usize;
    let fixed = out.len() + 14 + scan_bytes + 2;
    let mut filler = target.saturating_sub(fixed);
    while filler > 4 {
        let n = filler.min(65_000) - 4;
        let mut body = vec![0u8; n];
        rng.fill(&mut body);
        segment(&mut out, 0xFE, &body);
        filler = filler.saturating_sub(n + 4);
    }
    segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    // Every block: DC difference 0 ("0"), then end of block ("0"). The last
    // byte is padded with one bits, as the standard asks.
    let mut scan = vec![0u8; scan_bytes];
    let used_bits = (2 * blocks) % 8;
    if used_bits != 0
        && let Some(last) = scan.last_mut()
    {
        *last = 0xFFu8 >> used_bits;
    }
    out.extend_from_slice(&scan);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// Writes a media folder like Immich's under `root`: originals in
/// `upload/<user>/<aa>/<bb>/`, a few in `library/`, profile pictures,
/// thumbnails (derived, small) in `thumbs/`, and videos with their
/// `encoded-video/` versions.
pub fn generate(root: &Path, spec: &LibrarySpec) -> io::Result<Written> {
    let mut rng = Rng::new(spec.seed);
    let mut w = Written::default();
    let user = "0b1c2d3e-0000-4000-8000-00000000a11c";
    let put = |path: &Path, data: &[u8], w: &mut Written| -> io::Result<()> {
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        let mut f = fs::File::create(path)?;
        f.write_all(data)?;
        w.files += 1;
        w.bytes += data.len() as u64;
        Ok(())
    };
    for i in 0..spec.photos {
        let size = (spec.photo_bytes / 2 + rng.below(spec.photo_bytes.max(1))) as usize;
        let day = 1 + rng.below(28);
        let month = 1 + rng.below(12);
        let dt = format!(
            "20{:02}:{month:02}:{day:02} {:02}:{:02}:{:02}",
            15 + rng.below(11),
            rng.below(24),
            rng.below(60),
            rng.below(60)
        );
        let (wd, ht) = if rng.below(2) == 0 {
            (4032, 3024)
        } else {
            (3024, 4032)
        };
        let photo = jpeg(wd, ht, &dt, size, &mut rng);
        let id = format!("{:016x}{:016x}", rng.next_u64(), i);
        let dir = if i % 10 == 0 { "library" } else { "upload" };
        let original = root
            .join(dir)
            .join(user)
            .join(&id[0..2])
            .join(&id[2..4])
            .join(format!("IMG_{i:05}.jpg"));
        put(&original, &photo, &mut w)?;
        // Immich's preview and thumbnail of each photo (derived data).
        let thumb = jpeg(250, 188, &dt, 6_000 + rng.below(6_000) as usize, &mut rng);
        let tdir = root
            .join("thumbs")
            .join(user)
            .join(&id[0..2])
            .join(&id[2..4]);
        put(&tdir.join(format!("{id}-thumbnail.webp")), &thumb, &mut w)?;
    }
    for i in 0..spec.videos {
        let mut data = vec![0u8; spec.video_bytes as usize];
        rng.fill(&mut data);
        // An MP4 starts with an ftyp box.
        data[..12].copy_from_slice(b"\0\0\0\x18ftypisom");
        put(
            &root
                .join("upload")
                .join(user)
                .join("vv")
                .join(format!("VID_{i:04}.mp4")),
            &data,
            &mut w,
        )?;
        let enc = &data[..data.len() / 4];
        put(
            &root
                .join("encoded-video")
                .join(user)
                .join(format!("VID_{i:04}.mp4")),
            enc,
            &mut w,
        )?;
    }
    let avatar = jpeg(256, 256, "2024:01:01 00:00:00", 20_000, &mut rng);
    put(
        &root.join("profile").join(user).join("avatar.jpg"),
        &avatar,
        &mut w,
    )?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpegs_are_well_formed() {
        let mut rng = Rng::new(7);
        let j = jpeg(4032, 3024, "2024:05:06 07:08:09", 200_000, &mut rng);
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
        assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
        assert!((199_000..201_000).contains(&j.len()), "{}", j.len());
        // Walk the segments up to the scan: every length is consistent.
        let mut i = 2;
        let mut seen = vec![];
        loop {
            assert_eq!(j[i], 0xFF, "segment at {i}");
            let m = j[i + 1];
            let len = u16::from_be_bytes([j[i + 2], j[i + 3]]) as usize;
            seen.push(m);
            i += 2 + len;
            if m == 0xDA {
                break;
            }
        }
        assert_eq!(&seen[..4], &[0xE1, 0xDB, 0xC0, 0xC4]);
        // The scan is 2 bits per 8x8 block.
        let scan = j.len() - 2 - i;
        assert_eq!(scan, (2 * 504 * 378usize).div_ceil(8));
        let exif_at = j.windows(6).position(|w| w == b"Exif\0\0").unwrap();
        assert!(
            j[exif_at..exif_at + 200]
                .windows(19)
                .any(|w| w == b"2024:05:06 07:08:09")
        );
    }

    #[test]
    fn a_library_is_laid_out_like_immichs() {
        let d = tempfile::tempdir().unwrap();
        let spec = LibrarySpec {
            photos: 20,
            photo_bytes: 30_000,
            videos: 1,
            video_bytes: 100_000,
            seed: 1,
        };
        let w = generate(d.path(), &spec).unwrap();
        assert_eq!(w.files, 20 * 2 + 2 + 1);
        for sub in ["upload", "library", "thumbs", "encoded-video", "profile"] {
            assert!(d.path().join(sub).is_dir(), "{sub}");
        }
        let again = tempfile::tempdir().unwrap();
        assert_eq!(
            generate(again.path(), &spec).unwrap(),
            w,
            "seeded: the same tree"
        );
    }
}
