//! Authentication and role-based access control: turning auth on and off, users, roles and the
//! key-range permissions roles grant.
//!
//! Turning auth on requires a `root` user holding the `root` role. A client authenticates with
//! [`ClientOptions::with_user`](crate::ClientOptions::with_user); its token is refreshed
//! transparently when the server stops accepting it.
//!
//! Users, roles and permissions are cluster-wide: a [namespaced](Client::with_namespace) view
//! does **not** prefix the keys of a [`Permission`], which always name absolute keys.

use bytes::Bytes;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;
use crate::range::prefix_range_end;
use crate::rpc::{Call, stub};
use crate::types::ResponseHeader;

/// What a [`Permission`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PermissionKind {
    /// Reading (get, watch).
    Read,
    /// Writing (put, delete).
    Write,
    /// Both.
    ReadWrite,
}

/// Access to a key or a key range, granted to a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Permission {
    /// What the permission allows.
    pub kind: PermissionKind,
    /// The key, or the start of the range (absolute: never namespaced).
    pub key: Bytes,
    /// The end of the range (exclusive); empty for the single key `key`, `"\0"` for every key
    /// from `key` on.
    pub range_end: Bytes,
}

impl Permission {
    /// `kind` access to the single key `key`.
    pub fn new(kind: PermissionKind, key: impl Into<Bytes>) -> Self {
        Permission { kind, key: key.into(), range_end: Bytes::new() }
    }

    /// Read access to `key`.
    pub fn read(key: impl Into<Bytes>) -> Self {
        Self::new(PermissionKind::Read, key)
    }

    /// Write access to `key`.
    pub fn write(key: impl Into<Bytes>) -> Self {
        Self::new(PermissionKind::Write, key)
    }

    /// Read and write access to `key`.
    pub fn read_write(key: impl Into<Bytes>) -> Self {
        Self::new(PermissionKind::ReadWrite, key)
    }

    /// Extends the permission to every key starting with `key` (all keys for an empty key).
    pub fn with_prefix(mut self) -> Self {
        self.range_end = prefix_range_end(&self.key);
        self
    }

    /// Extends the permission to every key from `key` on.
    pub fn with_from_key(mut self) -> Self {
        self.range_end = Bytes::from_static(&[0]);
        self
    }

    /// Extends the permission to the keys in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Bytes>) -> Self {
        self.range_end = end.into();
        self
    }

    fn from_pb(p: authpb::Permission) -> Self {
        use authpb::permission::Type;
        let kind = match Type::try_from(p.perm_type) {
            Ok(Type::Write) => PermissionKind::Write,
            Ok(Type::Readwrite) => PermissionKind::ReadWrite,
            // READ is protobuf's zero value: what an unknown value decodes to as well.
            _ => PermissionKind::Read,
        };
        Permission { kind, key: p.key, range_end: p.range_end }
    }

    fn to_pb(&self) -> authpb::Permission {
        use authpb::permission::Type;
        let perm_type = match self.kind {
            PermissionKind::Read => Type::Read,
            PermissionKind::Write => Type::Write,
            PermissionKind::ReadWrite => Type::Readwrite,
        };
        authpb::Permission { perm_type: perm_type as i32, key: self.key.clone(), range_end: self.range_end.clone() }
    }
}

/// Answer to [`Client::auth_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AuthStatusResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// Whether authentication is on.
    pub enabled: bool,
    /// The auth store's revision: bumped by every change to users, roles or permissions.
    pub auth_revision: u64,
}

/// Answer to [`Client::user_get`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UserGetResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The roles the user holds.
    pub roles: Vec<String>,
}

/// Answer to [`Client::user_list`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UserListResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// Every user's name.
    pub users: Vec<String>,
}

/// Answer to [`Client::role_get`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RoleGetResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The key permissions the role grants.
    pub permissions: Vec<Permission>,
}

/// Answer to [`Client::role_list`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RoleListResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// Every role's name.
    pub roles: Vec<String>,
}

/// Rejects an empty user or role name before any RPC.
fn non_empty(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name is empty")));
    }
    Ok(())
}

/// Generates a method for one Auth RPC whose answer is just a header.
macro_rules! header_only {
    ($self:ident, $rpc:literal, $idem:ident, $method:ident, $req:expr) => {{
        let req = $req;
        let r = $self
            .call(Call::new($rpc, crate::rpc::Idempotency::$idem), |ch, meta| {
                let req = req.clone();
                async move { stub::auth(ch).$method(meta.request(req)).await }
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }};
}

impl Client {
    /// Turns authentication on. Requires a `root` user holding the `root` role; afterwards
    /// every request needs credentials (this client's too, unless it was made with them).
    pub async fn auth_enable(&self) -> Result<ResponseHeader> {
        header_only!(self, "AuthEnable", Write, auth_enable, pb::AuthEnableRequest {})
    }

    /// Turns authentication off (the caller must be `root`).
    pub async fn auth_disable(&self) -> Result<ResponseHeader> {
        header_only!(self, "AuthDisable", Write, auth_disable, pb::AuthDisableRequest {})
    }

    /// Whether authentication is on, and the auth store's revision. Needs etcd 3.5 or later:
    /// 3.4 has no such RPC and answers with [`Error::Unsupported`](crate::Error::Unsupported).
    pub async fn auth_status(&self) -> Result<AuthStatusResponse> {
        let r = self
            .call(Call::read("AuthStatus"), |ch, meta| async move {
                stub::auth(ch).auth_status(meta.request(pb::AuthStatusRequest {})).await
            })
            .await?;
        Ok(AuthStatusResponse {
            header: ResponseHeader::from_pb(r.header),
            enabled: r.enabled,
            auth_revision: r.auth_revision,
        })
    }

    /// Adds user `name` with `password` (not empty: see [`Client::user_add_no_password`]).
    pub async fn user_add(&self, name: impl Into<String>, password: impl Into<String>) -> Result<ResponseHeader> {
        let (name, password) = (name.into(), password.into());
        non_empty("user", &name)?;
        if password.is_empty() {
            return Err(Error::invalid("password is empty (use user_add_no_password for a user without one)"));
        }
        let req = pb::AuthUserAddRequest { name, password, options: None, hashed_password: String::new() };
        header_only!(self, "UserAdd", Write, user_add, req)
    }

    /// Adds user `name` without a password: it cannot authenticate with one, only with a TLS
    /// client certificate whose common name is `name` (servers started with
    /// `--client-cert-auth`).
    pub async fn user_add_no_password(&self, name: impl Into<String>) -> Result<ResponseHeader> {
        let name = name.into();
        non_empty("user", &name)?;
        let req = pb::AuthUserAddRequest {
            name,
            password: String::new(),
            options: Some(authpb::UserAddOptions { no_password: true }),
            hashed_password: String::new(),
        };
        header_only!(self, "UserAdd", Write, user_add, req)
    }

    /// The roles of user `name`.
    pub async fn user_get(&self, name: impl Into<String>) -> Result<UserGetResponse> {
        let name = name.into();
        non_empty("user", &name)?;
        let req = pb::AuthUserGetRequest { name };
        let r = self
            .call(Call::read("UserGet"), |ch, meta| {
                let req = req.clone();
                async move { stub::auth(ch).user_get(meta.request(req)).await }
            })
            .await?;
        Ok(UserGetResponse { header: ResponseHeader::from_pb(r.header), roles: r.roles })
    }

    /// Every user's name.
    pub async fn user_list(&self) -> Result<UserListResponse> {
        let r = self
            .call(Call::read("UserList"), |ch, meta| async move {
                stub::auth(ch).user_list(meta.request(pb::AuthUserListRequest {})).await
            })
            .await?;
        Ok(UserListResponse { header: ResponseHeader::from_pb(r.header), users: r.users })
    }

    /// Deletes user `name`.
    pub async fn user_delete(&self, name: impl Into<String>) -> Result<ResponseHeader> {
        let name = name.into();
        non_empty("user", &name)?;
        header_only!(self, "UserDelete", Write, user_delete, pb::AuthUserDeleteRequest { name })
    }

    /// Sets the password of user `name`. The user's existing tokens stay valid until they expire.
    pub async fn user_change_password(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<ResponseHeader> {
        let (name, password) = (name.into(), password.into());
        non_empty("user", &name)?;
        if password.is_empty() {
            return Err(Error::invalid("password is empty"));
        }
        let req = pb::AuthUserChangePasswordRequest { name, password, hashed_password: String::new() };
        header_only!(self, "UserChangePassword", Write, user_change_password, req)
    }

    /// Gives role `role` to user `user`.
    pub async fn user_grant_role(&self, user: impl Into<String>, role: impl Into<String>) -> Result<ResponseHeader> {
        let (user, role) = (user.into(), role.into());
        non_empty("user", &user)?;
        non_empty("role", &role)?;
        header_only!(self, "UserGrantRole", Write, user_grant_role, pb::AuthUserGrantRoleRequest { user, role })
    }

    /// Takes role `role` from user `user`.
    pub async fn user_revoke_role(&self, user: impl Into<String>, role: impl Into<String>) -> Result<ResponseHeader> {
        let (name, role) = (user.into(), role.into());
        non_empty("user", &name)?;
        non_empty("role", &role)?;
        header_only!(self, "UserRevokeRole", Write, user_revoke_role, pb::AuthUserRevokeRoleRequest { name, role })
    }

    /// Adds role `name`, with no permissions.
    pub async fn role_add(&self, name: impl Into<String>) -> Result<ResponseHeader> {
        let name = name.into();
        non_empty("role", &name)?;
        header_only!(self, "RoleAdd", Write, role_add, pb::AuthRoleAddRequest { name })
    }

    /// The permissions role `name` grants.
    pub async fn role_get(&self, name: impl Into<String>) -> Result<RoleGetResponse> {
        let role = name.into();
        non_empty("role", &role)?;
        let req = pb::AuthRoleGetRequest { role };
        let r = self
            .call(Call::read("RoleGet"), |ch, meta| {
                let req = req.clone();
                async move { stub::auth(ch).role_get(meta.request(req)).await }
            })
            .await?;
        Ok(RoleGetResponse {
            header: ResponseHeader::from_pb(r.header),
            permissions: r.perm.into_iter().map(Permission::from_pb).collect(),
        })
    }

    /// Every role's name.
    pub async fn role_list(&self) -> Result<RoleListResponse> {
        let r = self
            .call(Call::read("RoleList"), |ch, meta| async move {
                stub::auth(ch).role_list(meta.request(pb::AuthRoleListRequest {})).await
            })
            .await?;
        Ok(RoleListResponse { header: ResponseHeader::from_pb(r.header), roles: r.roles })
    }

    /// Deletes role `name` (and takes it from every user holding it).
    pub async fn role_delete(&self, name: impl Into<String>) -> Result<ResponseHeader> {
        let role = name.into();
        non_empty("role", &role)?;
        header_only!(self, "RoleDelete", Write, role_delete, pb::AuthRoleDeleteRequest { role })
    }

    /// Adds `permission` to role `role` (replacing the kind of an existing permission on the
    /// same range).
    pub async fn role_grant_permission(
        &self,
        role: impl Into<String>,
        permission: Permission,
    ) -> Result<ResponseHeader> {
        let name = role.into();
        non_empty("role", &name)?;
        let req = pb::AuthRoleGrantPermissionRequest { name, perm: Some(permission.to_pb()) };
        header_only!(self, "RoleGrantPermission", Write, role_grant_permission, req)
    }

    /// Removes from role `role` the permission on exactly `[key, range_end)` (an empty
    /// `range_end` for the single key; [`prefix_range_end`] for a prefix).
    pub async fn role_revoke_permission(
        &self,
        role: impl Into<String>,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
    ) -> Result<ResponseHeader> {
        let role = role.into();
        non_empty("role", &role)?;
        let req = pb::AuthRoleRevokePermissionRequest { role, key: key.into(), range_end: range_end.into() };
        header_only!(self, "RoleRevokePermission", Write, role_revoke_permission, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_encode() {
        let p = Permission::read_write("app/").with_prefix().to_pb();
        assert_eq!((p.perm_type, &p.key[..], &p.range_end[..]), (2, &b"app/"[..], &b"app0"[..]));
        let all = Permission::read("").with_prefix();
        assert_eq!(all.range_end, "\0");
        for kind in [PermissionKind::Read, PermissionKind::Write, PermissionKind::ReadWrite] {
            let p = Permission::new(kind, "k").with_from_key();
            assert_eq!(Permission::from_pb(p.to_pb()), p);
        }
    }
}
