//! The benchmark's ceiling client: the least a Rust program can do to restore a bucket's
//! latest versions with server-side copies. It lists the source (ListObjectVersions,
//! 1,000 a page) and sends one CopyObject per latest version from `--concurrency` tasks
//! on one SDK client (one hyper connection pool). No retries, no journal, no reports:
//! whatever s3-failback spends beyond this is the cost of its guarantees.
//!
//! Usage: `bench_copy_ceiling ENDPOINT SOURCE_BUCKET DEST_BUCKET [--concurrency N]`;
//! credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. Prints one line:
//! `result copies=N wall_s=S`.

use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use futures::stream::{self, StreamExt, TryStreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut positional, mut concurrency) = (Vec::new(), 256usize);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--concurrency" {
            concurrency = it.next().ok_or("--concurrency needs a value")?.parse()?;
        } else {
            positional.push(a);
        }
    }
    let [endpoint, source, dest] = <[String; 3]>::try_from(positional)
        .map_err(|_| "usage: bench_copy_ceiling ENDPOINT SOURCE DEST [--concurrency N]")?;
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "bench".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "bench".into());
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(key, secret, None, None, "bench"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    let client = Client::from_conf(conf);

    let started = Instant::now();
    let mut latest = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = client
            .list_object_versions()
            .bucket(&source)
            .max_keys(1000)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await?;
        for v in page.versions() {
            if v.is_latest() == Some(true) {
                latest.push((
                    v.key().unwrap_or_default().to_owned(),
                    v.version_id().unwrap_or_default().to_owned(),
                ));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    let copies = latest.len();
    stream::iter(latest)
        .map(|(key, version)| {
            let client = &client;
            let (source, dest) = (&source, &dest);
            async move {
                client
                    .copy_object()
                    .bucket(dest)
                    .key(&key)
                    .copy_source(format!("{source}/{key}?versionId={version}"))
                    .send()
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    println!("result copies={copies} wall_s={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
