use super::*;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn key_files_round_trip_and_refuse_each_other() {
    let (reader, writer) = generate().unwrap();
    let r2 = ReaderKey::parse(&reader.to_text(), "identity").unwrap();
    let w2 = WriterKey::parse(&writer.to_text(), "writer").unwrap();
    assert_eq!(r2.fingerprint(), w2.fingerprints()[0]);
    assert_eq!(r2.chunk_key().check(), w2.chunk_key().check());
    let e = WriterKey::parse(&reader.to_text(), "the writer key").unwrap_err();
    assert!(e.to_string().contains("identity"), "{e}");
    let e = ReaderKey::parse(&writer.to_text(), "the identity").unwrap_err();
    assert!(e.to_string().contains("writer key"), "{e}");
    // The writer key holds no secret that decrypts.
    assert!(!writer.to_text().contains("AGE-SECRET-KEY"));
}

#[test]
fn keyed_chunk_ids_differ_from_sha256_and_between_keys() {
    let (a, _) = generate().unwrap();
    let (b, _) = generate().unwrap();
    let d = data(1000);
    assert_eq!(a.chunk_key().chunk_id(&d), a.chunk_key().chunk_id(&d));
    assert_ne!(a.chunk_key().chunk_id(&d), b.chunk_key().chunk_id(&d));
    assert_ne!(a.chunk_key().chunk_id(&d), crate::repo::ChunkId::of(&d));
    assert_ne!(
        a.chunk_key().tag("v", "db/data"),
        b.chunk_key().tag("v", "db/data")
    );
}

#[test]
fn whole_objects_round_trip_and_name_wrong_identity_and_damage() {
    let (reader, writer) = generate().unwrap();
    let (other, _) = generate().unwrap();
    let plain = data(300_000);
    let ct = encrypt_bytes(&writer, &plain).unwrap();
    assert_eq!(decrypt_bytes(&reader, &ct).unwrap(), plain);
    assert!(matches!(
        decrypt_bytes(&other, &ct),
        Err(CryptoError::WrongIdentity)
    ));
    let mut bad = ct.clone();
    let at = bad.len() - 1000;
    bad[at] ^= 1;
    assert!(matches!(
        decrypt_bytes(&reader, &bad),
        Err(CryptoError::Damaged(_))
    ));
}

#[test]
fn ranges_decrypt_alone_and_match_the_whole() {
    let (reader, writer) = generate().unwrap();
    for len in [1usize, 65_536, 65_537, 200_000, 3 * 65_536] {
        let plain = data(len);
        let ct = encrypt_bytes(&writer, &plain).unwrap();
        let stored = ct.len() as u64;
        let c = match PackCipher::open(&reader, &ct[..40]) {
            Err(StreamError::NeedMore(n)) => {
                PackCipher::open(&reader, &ct[..(n as usize).min(ct.len())]).unwrap()
            }
            other => other.unwrap(),
        };
        let l = len as u64;
        for r in [0..l, 0..1, l - 1..l, l / 3..l / 2 + 1, 65_535.min(l - 1)..l] {
            let want = c.ciphertext_range(&r, stored);
            let got = c
                .decrypt_range(
                    bytes::Bytes::copy_from_slice(&ct[want.start as usize..want.end as usize]),
                    &r,
                    stored,
                )
                .unwrap();
            assert_eq!(
                got,
                plain[r.start as usize..r.end as usize],
                "len {len} range {r:?}"
            );
        }
    }
    let (other, _) = generate().unwrap();
    let ct = encrypt_bytes(&writer, &data(10)).unwrap();
    assert!(matches!(
        PackCipher::open(&other, &ct),
        Err(StreamError::WrongIdentity)
    ));
    let mut bad = ct.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    let c = PackCipher::open(&reader, &bad).unwrap();
    let r = 0..10;
    let want = c.ciphertext_range(&r, n as u64);
    assert!(matches!(
        c.decrypt_range(
            bytes::Bytes::copy_from_slice(&bad[want.start as usize..want.end as usize]),
            &r,
            n as u64,
        ),
        Err(StreamError::Damaged(_))
    ));
}

#[test]
fn sealed_parts_are_age_files_the_age_crate_reads_whole_and_by_range() {
    let (reader, writer) = generate().unwrap();
    const SEG: usize = 64 * 1024;
    for n in [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 17] {
        let plain = data(n);
        // Parts of awkward sizes, so segments are filled across them.
        let parts: Vec<&[u8]> = plain.chunks(1000 + n / 3).collect();
        let ct = stream::seal_parts(&writer, n, parts).unwrap();
        assert_eq!(decrypt_bytes(&reader, &ct).unwrap(), plain, "{n} bytes");
        let c = PackCipher::open(&reader, &ct).unwrap();
        let r = (n as u64 / 3)..(n as u64 - n as u64 / 5);
        let want = c.ciphertext_range(&r, ct.len() as u64);
        let got = c
            .decrypt_range(
                bytes::Bytes::copy_from_slice(&ct[want.start as usize..want.end as usize]),
                &r,
                ct.len() as u64,
            )
            .unwrap();
        assert_eq!(
            &got[..],
            &plain[r.start as usize..r.end as usize],
            "{n} bytes"
        );
    }
    let e = stream::seal_parts(&writer, 5, [&b"abc"[..]]).unwrap_err();
    assert!(e.to_string().contains("add up"), "{e}");
}
