//! kubelet: flags and config file into settings, then the node agent. Run as
//! `kubelet --runtime-shim ...` the binary is a container's shim instead.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(kubelet::shim::SHIM_FLAG) {
        return std::process::ExitCode::from(kubelet::shim::main(&args[1..]) as u8);
    }
    eprintln!("kubelet: not yet");
    std::process::ExitCode::FAILURE
}
