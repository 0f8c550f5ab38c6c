//! Routing: a parsed request and the VM's operations in, a response out. No sockets here.

use serde_json::{Map, Value};

use super::{Method, Request, Response};
use crate::ops::VmOps;
use crate::types::Action;

/// Answers one request by calling `ops`.
///
/// - `GET /vm` → 200 with [`crate::VmInfo`];
/// - `PUT /vm/{shutdown,stop,reboot}` → 202, `PUT /vm/{pause,resume}` → 204, or the
///   [`crate::OpError`]'s status;
/// - a known path with another method → 405 with `Allow`; an unknown path → 404;
/// - a `PUT` body that is not empty and not `{}` → 400.
///
/// A `?query` is ignored.
pub fn handle(request: &Request, ops: &dyn VmOps) -> Response {
    let path = request
        .path
        .split_once('?')
        .map_or(request.path.as_str(), |(p, _)| p);
    if path == "/vm" {
        return match request.method {
            Method::Get => Response::json(200, &ops.info()),
            _ => Response::method_not_allowed(path, "GET"),
        };
    }
    let Some(action) = Action::ALL.into_iter().find(|a| a.path() == path) else {
        return Response::error(404, format_args!("no such endpoint: {path}"));
    };
    if request.method != Method::Put {
        return Response::method_not_allowed(path, "PUT");
    }
    if let Err(e) = check_action_body(&request.body) {
        return Response::error(400, format_args!("invalid JSON body: {e}"));
    }
    let result = match action {
        Action::Shutdown => ops.shutdown(),
        Action::Stop => ops.stop(),
        Action::Reboot => ops.reboot(),
        Action::Pause => ops.pause(),
        Action::Resume => ops.resume(),
    };
    match result {
        Ok(()) => {
            log::info!("api: {action} requested");
            Response::empty(action.success_status())
        }
        Err(e) => {
            log::info!("api: {action} refused: {e}");
            Response::error(e.status(), format_args!("{action}: {e}"))
        }
    }
}

/// The optional body of `PUT /vm/<action>`: empty, or an empty JSON object. No action takes
/// options yet, so a field is refused rather than silently ignored.
fn check_action_body(body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    let object: Map<String, Value> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match object.keys().next() {
        Some(key) => Err(format!(
            "unknown field `{key}`: the action takes no options"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeVm;
    use crate::types::{ErrorBody, VmInfo, VmState};
    use crate::OpError;

    fn request(method: Method, path: &str, body: &[u8]) -> Request {
        Request {
            method,
            path: path.into(),
            body: body.to_vec(),
        }
    }

    fn put(vm: &FakeVm, path: &str) -> Response {
        handle(&request(Method::Put, path, b""), vm)
    }

    fn error_of(r: &Response) -> String {
        serde_json::from_slice::<ErrorBody>(r.body())
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(r.body())))
            .error
    }

    #[test]
    fn get_vm_returns_the_info() {
        let vm = FakeVm::new();
        let r = handle(&request(Method::Get, "/vm", b""), &vm);
        assert_eq!(r.status(), 200);
        let info: VmInfo = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(info, vm.info());
        // A query string does not change the route.
        let r = handle(&request(Method::Get, "/vm?pretty", b""), &vm);
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn each_action_calls_its_operation() {
        let vm = FakeVm::new();
        assert_eq!(put(&vm, "/vm/pause").status(), 204);
        assert_eq!(vm.state(), VmState::Paused);
        assert_eq!(put(&vm, "/vm/resume").status(), 204);
        assert_eq!(vm.state(), VmState::Running);
        assert_eq!(put(&vm, "/vm/reboot").status(), 202);
        assert_eq!(put(&vm, "/vm/shutdown").status(), 202);
        assert_eq!(vm.state(), VmState::ShuttingDown);
        assert_eq!(put(&vm, "/vm/stop").status(), 202);
        assert_eq!(vm.state(), VmState::Stopping);
        assert_eq!(
            vm.calls(),
            [
                Action::Pause,
                Action::Resume,
                Action::Reboot,
                Action::Shutdown,
                Action::Stop
            ]
        );
    }

    #[test]
    fn conflicts_are_409_with_a_json_error() {
        let vm = FakeVm::new();
        let r = put(&vm, "/vm/resume");
        assert_eq!(r.status(), 409);
        assert_eq!(error_of(&r), "resume: the VM is not paused");
        assert_eq!(put(&vm, "/vm/pause").status(), 204);
        let r = put(&vm, "/vm/pause");
        assert_eq!(r.status(), 409);
        assert_eq!(error_of(&r), "pause: the VM is already paused");
    }

    #[test]
    fn operation_errors_map_to_their_status() {
        let vm = FakeVm::new();
        for (e, status) in [
            (OpError::Unavailable("not with VFIO".into()), 503),
            (OpError::Internal("KVM_RUN failed\nbadly".into()), 500),
        ] {
            vm.fail_next(e);
            let r = put(&vm, "/vm/pause");
            assert_eq!(r.status(), status);
            assert!(!error_of(&r).contains('\n'));
        }
        assert_eq!(vm.state(), VmState::Running);
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let vm = FakeVm::new();
        for (method, path, allow) in [
            (Method::Put, "/vm", "GET"),
            (Method::Other("POST".into()), "/vm", "GET"),
            (Method::Other("HEAD".into()), "/vm", "GET"),
            (Method::Get, "/vm/pause", "PUT"),
            (Method::Other("DELETE".into()), "/vm/stop", "PUT"),
        ] {
            let r = handle(&request(method, path, b""), &vm);
            assert_eq!((r.status(), r.allow()), (405, Some(allow)), "{path}");
            error_of(&r);
        }
        assert!(vm.calls().is_empty());
    }

    #[test]
    fn unknown_paths_are_404() {
        let vm = FakeVm::new();
        for path in [
            "/",
            "/vm/",
            "/vms",
            "/vm/pause/now",
            "/VM",
            "*",
            "http://localhost/vm",
        ] {
            for method in [Method::Get, Method::Put] {
                let r = handle(&request(method, path, b""), &vm);
                assert_eq!(r.status(), 404, "{path}");
                error_of(&r);
            }
        }
    }

    #[test]
    fn action_bodies_must_be_empty_or_an_empty_object() {
        let vm = FakeVm::new();
        let r = handle(&request(Method::Put, "/vm/pause", b" {} "), &vm);
        assert_eq!(r.status(), 204);
        for body in [
            &b"{"[..],
            b"not json",
            b"[]",
            b"\xff\xfe",
            b"{\"force\": true}",
            b"   ",
        ] {
            let r = handle(&request(Method::Put, "/vm/resume", body), &vm);
            assert_eq!(r.status(), 400, "{body:?}");
            assert!(error_of(&r).starts_with("invalid JSON body: "));
        }
        assert_eq!(vm.state(), VmState::Paused);
        // GET ignores a body.
        let r = handle(&request(Method::Get, "/vm", b"junk"), &vm);
        assert_eq!(r.status(), 200);
    }
}
