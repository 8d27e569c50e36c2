//! Bearer tokens against the real binary configured with `[[auth.tokens]]`.

mod common;

use common::{binary, new_token, service_with};
use saga_client::{Client, GetOptions, ListOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_needed_and_sent() {
    let Some(bin) = binary() else { return };
    let (token, lines) = new_token(&bin);
    let Some(svc) = service_with(Some(&lines)) else {
        return;
    };

    let anonymous = Client::new(&svc.base).unwrap();
    let e = anonymous.list(&ListOptions::default()).await.unwrap_err();
    let p = e.problem().expect("a problem");
    assert_eq!((p.status, p.slug()), (401, "unauthorized"), "{p}");

    let wrong = Client::builder(&svc.base)
        .token("sgo_wrong")
        .build()
        .unwrap();
    assert_eq!(wrong.definitions().await.unwrap_err().status(), Some(401));

    let c = Client::builder(&svc.base).token(&token).build().unwrap();
    let page = c.list(&ListOptions::default()).await.unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    assert!(c.definitions().await.unwrap().is_empty());
    // Authenticated, so the answer is about the saga: unknown.
    let e = c.get("nope", GetOptions::default()).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
