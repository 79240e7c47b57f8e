//! Authentication: create `root` and a read-only user, turn auth on, show that passwords and
//! permissions are enforced, switch a live client to another user, then turn auth off and remove the users and role again, leaving the
//! server as it was found. (It expects a server with auth off and no `root` user.)
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example auth
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{Client, ClientOptions, Credentials, DeleteOptions, Error, GetOptions, Permission, PutOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let plain = Client::connect(&endpoints, ClientOptions::default()).await?;
    plain.put("example/auth/data", "visible to readers", PutOptions::new()).await?;

    plain.user_add("root", "root-password").await?;
    plain.user_grant_role("root", "root").await?;
    plain.role_add("example-reader").await?;
    plain.role_grant_permission("example-reader", Permission::read("example/auth/").with_prefix()).await?;
    plain.user_add("example-reader", "reader-password").await?;
    plain.user_grant_role("example-reader", "example-reader").await?;
    plain.auth_enable().await?;
    println!("auth enabled");

    let result = demonstrate(&endpoints).await;

    // Leave the server as found, whatever happened above.
    let root = Client::connect(&endpoints, ClientOptions::default().with_user("root", "root-password")).await?;
    root.auth_disable().await?;
    plain.user_delete("example-reader").await?;
    plain.role_delete("example-reader").await?;
    plain.user_delete("root").await?;
    plain.delete("example/auth/", DeleteOptions::new().with_prefix()).await?;
    println!("auth disabled, users and role removed");
    result
}

async fn demonstrate(endpoints: &[&str]) -> anyhow::Result<()> {
    match Client::connect(endpoints, ClientOptions::default().with_user("root", "wrong")).await {
        Err(Error::AuthFailed { .. }) => println!("wrong password: refused, as expected"),
        other => anyhow::bail!("a wrong password should be refused, got {other:?}"),
    }

    let anonymous = Client::connect(endpoints, ClientOptions::default()).await?;
    match anonymous.get("example/auth/data", GetOptions::new()).await {
        Err(e) => println!("no credentials: {e}"),
        Ok(_) => anyhow::bail!("an anonymous read should be refused"),
    }

    let root = Client::connect(endpoints, ClientOptions::default().with_user("root", "root-password")).await?;
    println!("as root: users = {:?}, roles = {:?}", root.user_list().await?.users, root.role_list().await?.roles);

    let reader =
        Client::connect(endpoints, ClientOptions::default().with_user("example-reader", "reader-password")).await?;
    let value = reader.get("example/auth/data", GetOptions::new()).await?;
    println!("as example-reader: read {:?}", value.kvs.first().map(|kv| kv.value_str()));
    match reader.put("example/auth/data", "changed", PutOptions::new()).await {
        Err(Error::PermissionDenied { .. }) => println!("as example-reader: write refused (permission denied)"),
        other => anyhow::bail!("a reader's write should be refused, got {other:?}"),
    }

    // Credentials change on a live client: tried first, then every call is root's.
    match reader.set_credentials(Some(Credentials::new("root", "wrong"))).await {
        Err(Error::AuthFailed { .. }) => {
            println!("set_credentials with a wrong password: refused, still example-reader")
        }
        other => anyhow::bail!("a wrong password should be refused, got {other:?}"),
    }
    reader.set_credentials(Some(Credentials::new("root", "root-password"))).await?;
    reader.put("example/auth/data", "changed by root", PutOptions::new()).await?;
    println!("the same client, now as root: write accepted");
    Ok(())
}
