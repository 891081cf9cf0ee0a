//! The gallery at rest, on SQLite and PostgreSQL: a restart restores the gallery exactly,
//! deletion makes a payer unmatchable and every stored ciphertext of theirs undecryptable
//! (crypto-shredding), shards split the payers, and a restarted matcher keeps its recent
//! captures.
//!
//! PostgreSQL runs on a database of its own on `FACEPAY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); unreachable, the variant says so and passes
//! unless `FACEPAY_REQUIRE_POSTGRES=1`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use facepay_domain::event::{FaceCaptured, PaymentRequested};
use facepay_domain::{
    CardChannel, CardCode, DeviceId, DeviceRef, Embedding, Envelope, EventBody, FaceCode, MerchantId, Money, Origin,
    OutTradeNo, PayerId, PhoneLast4, Score, StoreId,
};
use facepay_ingest::faces::{FaceStore, Shard};
use facepay_ingest::matching::{MatchStage, Routed};
use facepay_ledger::face_keys::FaceKeyFile;
use facepay_ledger::{Command, CommandKind, Identity, Ledger, LedgerStore, PgStore, Policy, SqliteStore};
use facepay_matcher::synthetic::SyntheticFaces;
use facepay_matcher::vault::{MasterKey, Vault};
use facepay_matcher::{Gallery, MatchPolicy, MatchRule};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

const PAYERS: usize = 60;

enum Home {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// The database, and a folder for the face key file.
    Pg(Box<PgConnectOptions>, String, tempfile::TempDir),
}

impl Drop for Home {
    fn drop(&mut self) {
        let Home::Pg(admin, name, _) = self else { return };
        let (admin, sql) = ((**admin).clone(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect_with(&admin).await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
    }
}

/// Opens the store of `home` (again: a restart).
async fn open(home: &Home) -> Arc<dyn LedgerStore> {
    match home {
        Home::Dir(dir) => {
            Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.path().join("f.db").display())).await.unwrap())
        }
        Home::Pg(admin, name, _) => Arc::new(PgStore::open_with(admin.clone().database(name)).await.unwrap()),
    }
}

/// Opens the face key file of `home` (again: a restart).
async fn keys(home: &Home) -> FaceKeyFile {
    let dir = match home {
        Home::Dir(dir) | Home::Pg(_, _, dir) => dir.path(),
    };
    FaceKeyFile::open(&dir.join("face-keys.db")).await.unwrap()
}

async fn home(postgres: bool) -> Option<Home> {
    if !postgres {
        return Some(Home::Dir(tempfile::tempdir().unwrap()));
    }
    let url = std::env::var("FACEPAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let admin = PgConnectOptions::from_str(&url).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect_with(&admin)).await;
    let Ok(Ok(mut conn)) = conn else {
        assert_ne!(std::env::var("FACEPAY_REQUIRE_POSTGRES").as_deref(), Ok("1"), "PostgreSQL required");
        eprintln!("skipped: PostgreSQL not reachable");
        return None;
    };
    let name = format!("facepay_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    Some(Home::Pg(Box::new(admin), name, tempfile::tempdir().unwrap()))
}

fn payer(i: usize) -> PayerId {
    PayerId::parse(format!("payer-{i:03}")).unwrap()
}

fn phone(i: usize) -> Option<PhoneLast4> {
    i.is_multiple_of(3).then(|| PhoneLast4::parse(&format!("{:04}", 1000 + i % 7)).unwrap())
}

fn capture(embedding: Embedding, phone_last4: Option<PhoneLast4>) -> FaceCaptured {
    FaceCaptured {
        face_code: FaceCode::parse("134567890123456789").unwrap(),
        embedding,
        liveness: Score::try_from(0.99).unwrap(),
        phone_last4,
    }
}

/// Enrols every synthetic payer (payer 5 twice: the second template replaces the first) and
/// deletes payer 7.
async fn populate(faces: &FaceStore, synthetic: &SyntheticFaces) {
    for i in 0..PAYERS {
        faces.enrol(&payer(i), &synthetic.enrolment(i), phone(i), Utc::now()).await.unwrap();
    }
    faces.enrol(&payer(5), &synthetic.nth_capture(5, 9), phone(5), Utc::now()).await.unwrap();
    assert!(faces.delete(&payer(7)).await.unwrap());
    assert!(!faces.delete(&payer(7)).await.unwrap(), "a second deletion finds no key");
}

/// The template each payer should have after [`populate`].
fn expected(synthetic: &SyntheticFaces, i: usize) -> Embedding {
    if i == 5 {
        synthetic.nth_capture(5, 9)
    } else {
        synthetic.enrolment(i)
    }
}

async fn restart_restores_the_gallery_and_deletion_shreds(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (key, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(77, PAYERS);
    populate(&FaceStore::new(open(&home).await, keys(&home).await, Vault::new(key), Shard::ALL), &synthetic).await;

    // Restart: a new store handle and a vault from the configured key.
    let faces = FaceStore::new(
        open(&home).await,
        keys(&home).await,
        Vault::new(MasterKey::from_hex(&hex).unwrap()),
        Shard::ALL,
    );
    let gallery = faces.load().await.unwrap();
    assert_eq!(gallery.len(), PAYERS - 1);
    let at = MerchantId::parse("1900000101").unwrap();
    let policy = MatchPolicy::default();
    for i in (0..PAYERS).filter(|&i| i != 7) {
        let id = gallery.identify(&at, &capture(expected(&synthetic, i), None), &policy).unwrap();
        assert_eq!((id.rule, id.payer_id), (MatchRule::GlobalHit, Some(payer(i))));
        assert!((id.score - 1.0).abs() < 1e-5, "the very template came back: {}", id.score);
        if let Some(p) = phone(i) {
            let id = gallery.identify(&at, &capture(expected(&synthetic, i), Some(p)), &policy).unwrap();
            assert_eq!((id.rule, id.payer_id), (MatchRule::PhoneNarrowedHit, Some(payer(i))), "phone restored");
        }
    }
    // The deleted payer: unmatchable, and the log's ciphertexts of theirs open for no one.
    let id = gallery.identify(&at, &capture(synthetic.enrolment(7), None), &policy).unwrap();
    assert_eq!((id.rule, id.payer_id), (MatchRule::NoMatch, None));
    let logged = faces.open_all(&payer(7)).await.unwrap();
    assert_eq!(logged.len(), 1, "the append-only log keeps the ciphertext");
    assert!(logged.iter().all(Result::is_err), "but it no longer opens");
    // Re-enrolment replaced payer 5's key: only the newest of the two ciphertexts opens.
    let fives = faces.open_all(&payer(5)).await.unwrap();
    assert_eq!(fives.len(), 2);
    assert!(fives[0].is_err() && fives[1].as_ref().ok() == Some(&synthetic.nth_capture(5, 9)));
    // The wrong master key refuses to load rather than load noise.
    let wrong = FaceStore::new(open(&home).await, keys(&home).await, Vault::new(MasterKey::generate().0), Shard::ALL);
    let err = wrong.load().await.unwrap_err().to_string();
    assert!(err.contains("does not open"), "{err}");
}

async fn shards_split_the_payers(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (key, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(78, PAYERS);
    populate(&FaceStore::new(open(&home).await, keys(&home).await, Vault::new(key), Shard::ALL), &synthetic).await;
    let mut total = 0;
    let mut galleries: Vec<Gallery> = Vec::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let vault = Vault::new(MasterKey::from_hex(&hex).unwrap());
        let g = FaceStore::new(open(&home).await, keys(&home).await, vault, shard).load().await.unwrap();
        total += g.len();
        galleries.push(g);
    }
    assert_eq!(total, PAYERS - 1, "every payer in exactly one shard");
    assert!(galleries.iter().all(|g| g.len() > 5), "the shards are not lopsided");
    let at = MerchantId::parse("1900000101").unwrap();
    for i in (0..PAYERS).filter(|&i| i != 7) {
        let owner = (0..3).find(|&s| Shard { index: s, count: 3 }.owns(&payer(i))).unwrap();
        let id = galleries[owner as usize]
            .identify(&at, &capture(expected(&synthetic, i), None), &MatchPolicy::default())
            .unwrap();
        assert_eq!(id.payer_id, Some(payer(i)));
    }
}

/// Two matchers enrolling one payer at once (the same payer in two enrolment events, or one
/// event delivered twice during a partition's handover) leave a live face that opens: each
/// shreds only the key the ledger's commit replaced, never the other's live one.
async fn two_enrolments_of_one_payer_at_once_keep_a_live_key(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (_, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(93, 2);
    let vault = || Vault::new(MasterKey::from_hex(&hex).unwrap());
    let a = FaceStore::new(open(&home).await, keys(&home).await, vault(), Shard::ALL);
    let b = FaceStore::new(open(&home).await, keys(&home).await, vault(), Shard::ALL);
    for round in 0..20 {
        let (x, y) = (synthetic.enrolment(0), synthetic.nth_capture(0, round));
        let p = payer(0);
        let (ra, rb) = tokio::join!(a.enrol(&p, &x, None, Utc::now()), b.enrol(&p, &y, None, Utc::now()));
        ra.unwrap();
        rb.unwrap();
        let gallery = a.load().await.unwrap();
        assert_eq!(gallery.len(), 1, "round {round}: the payer's live face opens");
        assert_eq!(a.keys().count_of(&payer(0)).await.unwrap(), 1, "round {round}: the replaced keys are gone");
    }
}

macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(false).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(true).await
            }
        }
    )+};
}

/// A member card, opened (or closed) through the ledger by payer `i`'s face, as the pipeline
/// does it.
fn card(merchant: &MerchantId, i: usize, open: bool) -> Command {
    let (merchant_id, card_code) = (merchant.clone(), CardCode::parse(format!("card-{i:03}")).unwrap());
    let identity = Identity::Resolved { payer_id: payer(i), rule: "global_hit".into() };
    let face_code =
        FaceCode::parse(format!("{:018}", 200_000_000_000_000_000_u64 + 10 * i as u64 + u64::from(open))).unwrap();
    let kind = match open {
        true => CommandKind::OpenMemberCard {
            merchant_id,
            face_code,
            identity,
            card_code,
            channel: CardChannel::CardPackage,
        },
        false => CommandKind::CloseMemberCard { merchant_id, face_code, identity, card_code },
    };
    Command::new(uuid::Uuid::new_v4(), Utc::now(), None, kind)
}

async fn restart_restores_the_memberships(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (key, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(79, PAYERS);
    let store = open(&home).await;
    populate(&FaceStore::new(store.clone(), keys(&home).await, Vault::new(key), Shard::ALL), &synthetic).await;
    let (shop, other) = (MerchantId::parse("1900000101").unwrap(), MerchantId::parse("1900000102").unwrap());
    for m in [&shop, &other] {
        store.register_merchant(m, "shop").await.unwrap();
    }
    // Payers 3 and 4 open the shop's card; 4 closes it again.
    let cards = [card(&shop, 3, true), card(&shop, 4, true), card(&shop, 4, false)];
    let ledger = Ledger::new(store.clone(), Policy::default());
    for c in cards {
        let _ = ledger.handle_batch(&[c]).await.unwrap();
    }

    let faces = FaceStore::new(
        open(&home).await,
        keys(&home).await,
        Vault::new(MasterKey::from_hex(&hex).unwrap()),
        Shard::ALL,
    );
    let gallery = faces.load().await.unwrap();
    let rule = |at: &MerchantId, i: usize| {
        gallery.identify(at, &capture(expected(&synthetic, i), None), &MatchPolicy::default()).unwrap().rule
    };
    assert_eq!(rule(&shop, 3), MatchRule::MemberHit, "an open card survives the restart");
    assert_eq!(rule(&shop, 4), MatchRule::GlobalHit, "a closed card does not");
    assert_eq!(rule(&other, 3), MatchRule::GlobalHit, "a membership is the merchant's own");
    // A shard marks only its own payers' memberships (the others are not in its gallery).
    let owner = (0..2).find(|&s| Shard { index: s, count: 2 }.owns(&payer(3))).unwrap();
    let shard = Shard { index: owner, count: 2 };
    let faces =
        FaceStore::new(open(&home).await, keys(&home).await, Vault::new(MasterKey::from_hex(&hex).unwrap()), shard);
    let id =
        faces.load().await.unwrap().identify(&shop, &capture(expected(&synthetic, 3), None), &MatchPolicy::default());
    assert_eq!(id.unwrap().rule, MatchRule::MemberHit);
}

/// A device event at the shop's till.
fn at_till(body: EventBody) -> Envelope {
    let device = DeviceRef {
        merchant_id: MerchantId::parse("1900000101").unwrap(),
        store_id: StoreId::parse("store-1").unwrap(),
        device_id: DeviceId::parse("till-1").unwrap(),
    };
    Envelope::new(uuid::Uuid::new_v4(), Utc::now(), Origin::Device(device), body)
}

/// The identity the stage's payment command carries for the capture `face_code`.
fn paid_by(stage: &mut MatchStage, face_code: &str) -> Identity {
    let pay = PaymentRequested {
        out_trade_no: OutTradeNo::parse(format!("T{face_code}")).unwrap(),
        amount: Money::from_fen(1_00).unwrap(),
        face_code: FaceCode::parse(face_code).unwrap(),
    };
    match stage.route(at_till(EventBody::PaymentRequested(pay))) {
        Routed::Command(Command { kind: CommandKind::Pay { identity, .. }, .. }) => identity,
        other => panic!("not a payment: {other:?}"),
    }
}

/// A matcher restarted between a capture and its payment still pays from the payer the
/// capture identified; captures older than the window are not restored.
async fn restart_between_capture_and_payment_keeps_the_identity(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (key, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(83, PAYERS);
    let faces = FaceStore::new(open(&home).await, keys(&home).await, Vault::new(key), Shard::ALL);
    populate(&faces, &synthetic).await;
    let mut stage = MatchStage::new(faces.load().await.unwrap(), MatchPolicy::default()).keeping_identified();
    let mut seen = capture(expected(&synthetic, 3), None);
    seen.face_code = FaceCode::parse("134567890123450003").unwrap();
    let mut stranger = capture(synthetic.nth_stranger(1), None);
    stranger.face_code = FaceCode::parse("134567890123450099").unwrap();
    for c in [seen, stranger] {
        stage.route(at_till(EventBody::FaceCaptured(c)));
    }
    let identified = stage.take_identified();
    assert_eq!(identified.len(), 2);
    assert!(stage.take_identified().is_empty(), "taken once");
    faces.remember_captures(identified, Utc::now()).await.unwrap();
    // An old capture, from before the window: forgotten by the next write and never restored.
    let old = Utc::now() - chrono::Duration::hours(1);
    let stale = (FaceCode::parse("134567890123450050").unwrap(), Identity::Unresolved { rule: "no_match".into() });
    faces.remember_captures(vec![stale], old).await.unwrap();

    // The restart: a new process, store and stage.
    let faces = FaceStore::new(
        open(&home).await,
        keys(&home).await,
        Vault::new(MasterKey::from_hex(&hex).unwrap()),
        Shard::ALL,
    );
    let mut restarted = MatchStage::new(faces.load().await.unwrap(), MatchPolicy::default());
    let recent = faces.recent_captures(Utc::now()).await.unwrap();
    assert_eq!(recent.len(), 2, "{recent:?}");
    restarted.restore_captures(recent);
    assert_eq!(
        paid_by(&mut restarted, "134567890123450003"),
        Identity::Resolved { payer_id: payer(3), rule: "global_hit".into() }
    );
    assert_eq!(paid_by(&mut restarted, "134567890123450099"), Identity::Unresolved { rule: "no_match".into() });
    assert_eq!(paid_by(&mut restarted, "134567890123450050"), Identity::Unresolved { rule: "unknown_capture".into() });
    // Without the restore, the payment would find no capture (what used to happen).
    let mut forgetful = MatchStage::new(faces.load().await.unwrap(), MatchPolicy::default());
    assert_eq!(paid_by(&mut forgetful, "134567890123450003"), Identity::Unresolved { rule: "unknown_capture".into() });
}

/// A face code identified twice in one batch (a device that sent its capture again) is kept
/// once, as last identified, instead of failing the batch's write (which would stop the
/// matcher stage on the same batch again and again).
async fn a_face_code_twice_in_one_batch_is_kept_as_last_identified(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let faces = FaceStore::new(open(&home).await, keys(&home).await, Vault::new(MasterKey::generate().0), Shard::ALL);
    let code = FaceCode::parse("134567890123450007").unwrap();
    let first = Identity::Unresolved { rule: "no_match".into() };
    let again = Identity::Resolved { payer_id: payer(7), rule: "global_hit".into() };
    faces.remember_captures(vec![(code.clone(), first), (code.clone(), again.clone())], Utc::now()).await.unwrap();
    assert_eq!(faces.recent_captures(Utc::now()).await.unwrap(), vec![(code, again)]);
}

/// Two matcher processes over one store: each follows the gallery feed, so a face enrolled,
/// re-enrolled or deleted through one is known to the other at its next batch, while both
/// run (before, the other knew it only after a restart). A shard follows only its payers.
async fn a_face_enrolled_through_one_matcher_is_known_to_the_other_at_once(postgres: bool) {
    let Some(home) = home(postgres).await else { return };
    let (key, hex) = MasterKey::generate();
    let synthetic = SyntheticFaces::new(91, PAYERS);
    let vault = || Vault::new(MasterKey::from_hex(&hex).unwrap());
    let (one, other) = (FaceStore::new(open(&home).await, keys(&home).await, Vault::new(key), Shard::ALL), {
        FaceStore::new(open(&home).await, keys(&home).await, vault(), Shard::ALL)
    });
    let (gallery, position) = other.load_following().await.unwrap();
    let mut stage = MatchStage::new(gallery, MatchPolicy::default()).following(position);
    let who = |stage: &MatchStage, i: usize| {
        let shop = MerchantId::parse("1900000101").unwrap();
        let capture = capture(expected(&synthetic, i), None);
        stage.gallery().identify(&shop, &capture, &MatchPolicy::default()).unwrap().payer_id
    };
    populate(&one, &synthetic).await;
    assert_eq!(who(&stage, 3), None, "not followed yet");
    stage.follow(&other).await.unwrap();
    for i in (0..PAYERS).filter(|&i| i != 7) {
        assert_eq!(who(&stage, i), Some(payer(i)), "payer {i} enrolled through the other matcher");
    }
    assert_eq!(who(&stage, 7), None, "payer 7 was deleted");
    // A deletion later reaches it the same way.
    one.delete(&payer(3)).await.unwrap();
    stage.follow(&other).await.unwrap();
    assert_eq!(who(&stage, 3), None, "deleted through the other matcher");
    assert_eq!(
        stage.feed_position(),
        Some(position + PAYERS as i64 + 4),
        "one change per write (4: a re-enrolment, three deletions)"
    );
    // A shard follows its own payers only.
    let shard = Shard { index: 0, count: 2 };
    let sharded = FaceStore::new(open(&home).await, keys(&home).await, vault(), shard);
    let mut shard_stage = MatchStage::new(Gallery::new(), MatchPolicy::default()).with_shard(shard).following(0);
    shard_stage.follow(&sharded).await.unwrap();
    for i in (0..PAYERS).filter(|&i| i != 7 && i != 3) {
        let known = who(&shard_stage, i).is_some();
        assert_eq!(known, shard.owns(&payer(i)), "payer {i} in shard 0 of 2: {known}");
    }
}

on_both_stores!(
    two_enrolments_of_one_payer_at_once_keep_a_live_key,
    a_face_enrolled_through_one_matcher_is_known_to_the_other_at_once,
    a_face_code_twice_in_one_batch_is_kept_as_last_identified,
    restart_restores_the_gallery_and_deletion_shreds,
    shards_split_the_payers,
    restart_restores_the_memberships,
    restart_between_capture_and_payment_keeps_the_identity
);

/// A database from before migration 0020 kept the wrapped keys in its own `face_keys`: the
/// matcher's next start moves them to the key file and deletes them there, and the gallery
/// it loads is whole.
#[tokio::test]
async fn keys_kept_in_the_ledger_before_migration_0020_move_to_the_key_file() {
    let home = home(false).await.unwrap();
    let (key, _) = MasterKey::generate();
    let vault = Vault::new(key);
    let synthetic = SyntheticFaces::new(91, 3);
    let store = open(&home).await;
    let Home::Dir(dir) = &home else { unreachable!() };
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.path().join("f.db").display())).await.unwrap();
    for i in 0..3 {
        let sealed = vault.seal(&payer(i), &synthetic.enrolment(i));
        let (p, k) = (payer(i).as_str().to_string(), sealed.key_id.to_string());
        let hash = i64::from(facepay_ingest::faces::shard_hash(&payer(i)));
        let at = Utc::now().to_rfc3339();
        for sql in [
            "INSERT INTO face_templates (payer_id, key_id, ciphertext, enrolled_at) VALUES ($1, $2, $3, $5)",
            "INSERT INTO face_keys (payer_id, key_id, shard_hash, phone_last4, wrapped_key, created_at) \
             VALUES ($1, $2, $4, NULL, $3, $5)",
            "INSERT INTO face_live (payer_id, key_id, shard_hash, created_at) VALUES ($1, $2, $4, $5)",
        ] {
            let blob = if sql.contains("face_keys") { &sealed.wrapped_key } else { &sealed.ciphertext };
            sqlx::query(sql).bind(&p).bind(&k).bind(blob).bind(hash).bind(&at).execute(&mut conn).await.unwrap();
        }
    }
    let faces = FaceStore::new(store.clone(), keys(&home).await, vault, Shard::ALL);
    let (gallery, _) = faces.load_following().await.unwrap();
    assert_eq!(gallery.len(), 3, "every legacy face loads");
    assert!(store.face_keys_legacy(10).await.unwrap().is_empty(), "no key left in the ledger's database");
    assert_eq!(faces.keys().count_of(&payer(1)).await.unwrap(), 1, "the key is in the key file");
}
