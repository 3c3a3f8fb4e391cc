//! `palisade`: check, render and describe Palisade filter chains offline.
//!
//! Exit codes, for CI: 0 valid / done (every case passed), 1 invalid (a
//! config a filter refuses, a chain that cannot be rendered, a failing
//! policy case), 2 usage or I/O error.

use clap::{Parser, Subcommand, ValueEnum};
use palisade_cli::chain::{self, Chain, Problem};
use palisade_cli::{
    check, envoy, envoy_gateway, istio, kong, meta, observability, oci, policy, registry, schema,
};
use palisade_core::HostKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Check and render Palisade filter chains"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate every filter config of chain files with the filters' own code.
    Check {
        /// Platform(s) to check for, as `render` would (repeat or comma-separate);
        /// default: the chain file's `platforms` (envoy, plus istio when a route
        /// has an istio section).
        #[arg(long, value_enum, value_delimiter = ',')]
        platform: Vec<PlatformArg>,
        #[command(flatten)]
        modules: ModulesArg,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a cases file's requests through a chain, natively (no proxy): unit tests for security policy.
    Test {
        chain: PathBuf,
        cases: PathBuf,
        /// text, or junit (JUnit XML on stdout, for CI test reports).
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// Render a chain file for a platform (to stdout, or -o FILE).
    Render {
        #[command(subcommand)]
        target: Target,
    },
    /// Print a filter's config JSON Schema (`palisade`: the chain file's, palisade.wasm's config).
    Schema {
        filter: String,
        /// Draft 4 (what Kong's meta.json carries) instead of schemars' draft 2020-12.
        #[arg(long)]
        draft4: bool,
    },
    /// Print a filter's Kong meta.json (`palisade`: palisade.wasm's), or write one beside every module of --dist.
    Meta {
        filter: Option<String>,
        /// Write dist/palisade.meta.json for dist/palisade.wasm and
        /// dist/palisade_<name>.meta.json for each dist/palisade_<name>.wasm.
        #[arg(long, conflicts_with = "filter")]
        dist: Option<PathBuf>,
    },
    /// Write an OCI image layout (Istio compat format) for dist/palisade.wasm and each dist/palisade_<name>.wasm.
    Oci {
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// Output directory (default: <dist>/oci).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Tag recorded in index.json (org.opencontainers.image.ref.name).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
    },
    /// Write the Grafana dashboard and Prometheus alerting rules, generated from the filters' counters.
    Observability {
        #[arg(long, default_value = "deploy/observability")]
        out: PathBuf,
    },
    /// List the filters this palisade knows.
    Filters,
}

#[derive(Subcommand)]
enum Target {
    /// A complete Envoy bootstrap (listener, routes with their chains, clusters).
    Envoy {
        file: PathBuf,
        #[arg(long, default_value = "0.0.0.0:10000")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Directory holding palisade.wasm (palisade_<name>.wasm per filter) on the Envoy host.
        #[arg(long, default_value = "/etc/envoy")]
        wasm_dir: String,
        #[command(flatten)]
        modules: ModulesArg,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// WasmPlugin or TrafficExtension resources (one per workload target; per filter: one per route and filter), or EnvoyFilters.
    Istio {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "wasm-plugin")]
        kind: IstioKind,
        /// Where your registry serves the module (required, except for
        /// envoy-filter); {filter} becomes `palisade` (per filter: the filter
        /// name, and then required in the URL).
        #[arg(long)]
        url: Option<String>,
        /// Pin sha256 from this dist/ (OCI manifest digests for oci:// URLs,
        /// module digests otherwise); default: ./dist when it holds them.
        #[arg(long, conflicts_with = "no_pin")]
        pin_from: Option<PathBuf>,
        /// No sha256, even when ./dist holds the images (examples, tests).
        #[arg(long)]
        no_pin: bool,
        /// envoy-filter: directory of palisade.wasm (palisade_<name>.wasm) inside the proxy.
        #[arg(long, default_value = istio::DEFAULT_WASM_DIR)]
        wasm_dir: String,
        #[command(flatten)]
        modules: ModulesArg,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Envoy Gateway EnvoyExtensionPolicy resources (one per route, attached to the HTTPRoute of its name).
    EnvoyGateway {
        file: PathBuf,
        /// Where your registry serves the module: oci://registry/image:tag
        /// or https://...; {filter} becomes `palisade` (per filter: the
        /// filter name, and then required in the URL).
        #[arg(long)]
        url: String,
        /// Pin sha256 from this dist/ (OCI manifest digests for oci:// URLs,
        /// module digests otherwise); default: ./dist when it holds them.
        #[arg(long, conflicts_with = "no_pin")]
        pin_from: Option<PathBuf>,
        /// No sha256, even when ./dist holds the images (examples, tests).
        #[arg(long)]
        no_pin: bool,
        /// Namespace of the HTTPRoutes (and so of the policies).
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The Gateway whose Envoy gets the clusters of called services.
        #[arg(long, default_value = "eg")]
        gateway: String,
        #[command(flatten)]
        modules: ModulesArg,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Kong declarative config (kong.yml).
    Kong {
        file: PathBuf,
        /// filter-chains (Kong 3.4 to 3.9) or plugins (Kong 3.9).
        #[arg(long, value_enum, default_value = "filter-chains")]
        form: KongForm,
        #[command(flatten)]
        modules: ModulesArg,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ModulesArg {
    /// single: palisade.wasm runs the whole chain; per-filter: palisade_<name>.wasm per control.
    #[arg(long, value_enum, default_value = "single")]
    modules: ModulesKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModulesKind {
    Single,
    PerFilter,
}

impl ModulesArg {
    fn get(&self) -> envoy::Modules {
        match self.modules {
            ModulesKind::Single => envoy::Modules::Single,
            ModulesKind::PerFilter => envoy::Modules::PerFilter,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PlatformArg {
    Envoy,
    Istio,
    Kong,
}

impl PlatformArg {
    fn get(self) -> chain::Platform {
        match self {
            PlatformArg::Envoy => chain::Platform::Envoy,
            PlatformArg::Istio => chain::Platform::Istio,
            PlatformArg::Kong => chain::Platform::Kong,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum IstioKind {
    WasmPlugin,
    TrafficExtension,
    EnvoyFilter,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum KongForm {
    FilterChains,
    Plugins,
}

/// Why the command failed: `Invalid` exits 1, `Usage` 2.
enum Failure {
    Invalid(Vec<String>),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(lines)) => {
            for l in lines {
                eprintln!("{l}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("palisade: {m}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

/// `file:line: problem` (the line where the problem was written, when the
/// file shows it), each problem once.
fn located(file: &Path, text: &str, problems: &[Problem]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in problems {
        let line = match check::line_of(text, &p.at) {
            Some(n) => format!("{}:{n}: {p}", file.display()),
            None => format!("{}: {p}", file.display()),
        };
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// Loads a chain and checks its configs on `hosts`: nothing is rendered
/// from a config a filter would refuse.
fn load_checked(file: &Path, hosts: &[HostKind]) -> Result<Chain, Failure> {
    let text = read(file)?;
    let chain = chain::load(&text).map_err(|p| Failure::Invalid(located(file, &text, &p)))?;
    let problems = check::check(&chain, hosts);
    if problems.is_empty() {
        Ok(chain)
    } else {
        Err(Failure::Invalid(located(file, &text, &problems)))
    }
}

fn emit(text: &str, output: Option<&Path>) -> Result<(), Failure> {
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn filter(name: &str) -> Result<&'static registry::Filter, Failure> {
    registry::find(name).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown filter {name:?} (known: {})",
            registry::names()
        ))
    })
}

const NO_PIN: &str = "palisade: no sha256 in the resources: no images in ./dist for this URL \
                      (`make oci`, or --pin-from DIR)";

/// `./dist`, when it holds every module the rendering names (images for
/// `oci://` URLs, modules otherwise): what `sha256` is pinned from by default.
fn default_pin(url: &str, chain: &Chain, modules: envoy::Modules) -> Option<PathBuf> {
    let dist = PathBuf::from("dist");
    let has = |name: &str| {
        if url.starts_with("oci://") {
            dist.join("oci").join(name).join("index.json").is_file()
        } else {
            dist.join(envoy::module_file(name)).is_file()
        }
    };
    let needed = match modules {
        envoy::Modules::Single => vec![envoy::MODULE],
        envoy::Modules::PerFilter => chain
            .routes
            .iter()
            .flat_map(|r| r.filters.iter().map(|u| u.filter.name))
            .collect(),
    };
    needed.iter().all(|n| has(n)).then_some(dist)
}

/// `palisade test`: every case run; exit 1 when one fails or a file is
/// invalid, as `check` does.
fn test(chain_file: &Path, cases_file: &Path, format: ReportFormat) -> Result<(), Failure> {
    let chain = load_checked(chain_file, &[HostKind::Envoy])?;
    let text = read(cases_file)?;
    let base = cases_file.parent().unwrap_or(Path::new("."));
    let mut suite =
        policy::load(&text, base).map_err(|p| Failure::Invalid(located(cases_file, &text, &p)))?;
    let chain = policy::prepare(&chain, &mut suite)
        .map_err(|p| Failure::Invalid(located(cases_file, &text, &p)))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let runner = policy::Runner::new(&chain, now)
        .map_err(|m| Failure::Invalid(vec![format!("{}: {m}", chain_file.display())]))?;
    let results = policy::run_all(&runner, &suite);
    match format {
        ReportFormat::Text => print!("{}", policy::report_text(&results)),
        ReportFormat::Junit => print!(
            "{}",
            policy::report_junit(&cases_file.display().to_string(), &results)
        ),
    }
    if results.iter().all(policy::CaseResult::passed) {
        Ok(())
    } else {
        Err(Failure::Invalid(Vec::new()))
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Check {
            platform,
            modules,
            files,
        } => {
            let mut lines = Vec::new();
            for file in &files {
                let text = read(file)?;
                match chain::parse(&text) {
                    Err(p) => lines.extend(located(file, &text, &[p])),
                    Ok(parsed) => {
                        // Every problem at once: the chain's, and the
                        // configs of whatever resolved; render checks only
                        // for a chain that resolved whole.
                        let (c, mut problems) = chain::resolve_all(&parsed);
                        let platforms: Vec<chain::Platform> = if platform.is_empty() {
                            c.platforms.clone()
                        } else {
                            platform.iter().map(|p| p.get()).collect()
                        };
                        if problems.is_empty() {
                            problems = check::for_platforms(&c, &platforms, modules.get());
                        } else {
                            problems.extend(check::check(&c, &check::hosts(&platforms)));
                        }
                        lines.extend(located(file, &text, &problems));
                    }
                }
            }
            if lines.is_empty() {
                for file in &files {
                    println!("{}: ok", file.display());
                }
                Ok(())
            } else {
                Err(Failure::Invalid(lines))
            }
        }
        Command::Test {
            chain,
            cases,
            format,
        } => test(&chain, &cases, format),
        Command::Render { target } => match target {
            Target::Envoy {
                file,
                listen,
                admin,
                wasm_dir,
                modules,
                output,
            } => {
                let chain = load_checked(&file, &[HostKind::Envoy])?;
                let options = envoy::Options {
                    listen,
                    admin,
                    wasm_dir,
                    modules: modules.get(),
                };
                let text = envoy::render_text(&chain, &options)
                    .map_err(|m| Failure::Invalid(vec![format!("{}: {m}", file.display())]))?;
                emit(&text, output.as_deref())
            }
            Target::Istio {
                file,
                kind,
                url,
                pin_from,
                no_pin,
                wasm_dir,
                modules,
                output,
            } => {
                let chain = load_checked(&file, &[HostKind::Envoy])?;
                let kind = match kind {
                    IstioKind::WasmPlugin => istio::Kind::WasmPlugin,
                    IstioKind::TrafficExtension => istio::Kind::TrafficExtension,
                    IstioKind::EnvoyFilter => istio::Kind::EnvoyFilter,
                };
                let url = match (url, kind) {
                    (Some(url), _) => url,
                    (None, istio::Kind::EnvoyFilter) => istio::DEFAULT_URL.to_string(),
                    (None, _) => {
                        return Err(Failure::Usage(
                            "render istio needs --url: where your registry serves the module \
                             (for example 'oci://ghcr.io/acme/palisade/{filter}:0.1.0' after \
                             `make oci` and a push)"
                                .into(),
                        ))
                    }
                };
                let pin_from = pin_from.or_else(|| {
                    (kind != istio::Kind::EnvoyFilter && !no_pin)
                        .then(|| default_pin(&url, &chain, modules.get()))
                        .flatten()
                });
                if pin_from.is_none() && kind != istio::Kind::EnvoyFilter && !no_pin {
                    eprintln!("{NO_PIN}");
                }
                let options = istio::Options {
                    kind,
                    url,
                    pin_from,
                    wasm_dir,
                    modules: modules.get(),
                };
                let text = istio::render(&chain, &options)
                    .map_err(|m| Failure::Invalid(vec![format!("{}: {m}", file.display())]))?;
                emit(&text, output.as_deref())
            }
            Target::EnvoyGateway {
                file,
                url,
                pin_from,
                no_pin,
                namespace,
                gateway,
                modules,
                output,
            } => {
                let chain = load_checked(&file, &[HostKind::Envoy])?;
                let pin_from = pin_from.or_else(|| {
                    (!no_pin)
                        .then(|| default_pin(&url, &chain, modules.get()))
                        .flatten()
                });
                if pin_from.is_none() && !no_pin {
                    eprintln!("{NO_PIN}");
                }
                let options = envoy_gateway::Options {
                    url,
                    pin_from,
                    namespace,
                    gateway,
                    modules: modules.get(),
                };
                let text = envoy_gateway::render_text(&chain, &options)
                    .map_err(|m| Failure::Invalid(vec![format!("{}: {m}", file.display())]))?;
                emit(&text, output.as_deref())
            }
            Target::Kong {
                file,
                form,
                modules,
                output,
            } => {
                let chain = load_checked(&file, &[HostKind::Kong])?;
                let form = match form {
                    KongForm::FilterChains => kong::Form::FilterChains,
                    KongForm::Plugins => kong::Form::Plugins,
                };
                let text =
                    kong::render_text(&chain, form, modules.get()).map_err(Failure::Usage)?;
                emit(&text, output.as_deref())
            }
        },
        Command::Schema {
            filter: name,
            draft4,
        } => {
            let s = if name == envoy::MODULE {
                schema::chain_schema()
            } else {
                (filter(&name)?.schema)()
            };
            let s = if draft4 {
                schema::draft4(&s).map_err(|m| Failure::Invalid(vec![m]))?
            } else {
                s
            };
            print!("{}", pretty(&s));
            Ok(())
        }
        Command::Meta { filter: name, dist } => match (name, dist) {
            (Some(name), None) => {
                let m = if name == envoy::MODULE {
                    meta::module_meta_json()
                } else {
                    meta::meta_json(filter(&name)?)
                }
                .map_err(Failure::Usage)?;
                print!("{}", pretty(&m));
                Ok(())
            }
            (None, Some(dist)) => {
                for (name, wasm) in oci::modules(&dist).map_err(Failure::Usage)? {
                    let m = if name == envoy::MODULE {
                        meta::module_meta_json()
                    } else if let Some(f) = registry::find(&name) {
                        meta::meta_json(f)
                    } else {
                        eprintln!("{}: not a known filter, no meta.json", wasm.display());
                        continue;
                    };
                    match m {
                        Ok(m) => {
                            let file = envoy::module_file(&name);
                            let stem = file.trim_end_matches(".wasm");
                            let path = dist.join(format!("{stem}.meta.json"));
                            std::fs::write(&path, pretty(&m))
                                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                            println!("{}", path.display());
                        }
                        Err(e) => eprintln!("warning: {e}"),
                    }
                }
                Ok(())
            }
            _ => Err(Failure::Usage("give a filter name or --dist DIR".into())),
        },
        Command::Oci { dist, out, tag } => {
            let out = out.unwrap_or_else(|| dist.join("oci"));
            let modules = oci::modules(&dist).map_err(Failure::Usage)?;
            if modules.is_empty() {
                return Err(Failure::Usage(format!(
                    "no palisade.wasm or palisade_<name>.wasm in {} (run `make build`)",
                    dist.display()
                )));
            }
            std::fs::create_dir_all(&out)
                .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
            for (name, path) in modules {
                let wasm = std::fs::read(&path)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                let image = oci::write(&name, &wasm, &tag, &out).map_err(Failure::Usage)?;
                println!(
                    "{:<10} {}  (manifest; layer {}, plugin.wasm sha256:{})  {}",
                    image.name,
                    image.manifest_digest,
                    &image.layer_digest[..19],
                    &image.wasm_sha256[..12],
                    image.tarball.display()
                );
            }
            Ok(())
        }
        Command::Observability { out } => {
            let files = observability::files().map_err(|m| Failure::Invalid(vec![m]))?;
            std::fs::create_dir_all(&out)
                .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
            for (name, text) in files {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Filters => {
            println!(
                "{:<10} every control below in one module (palisade.wasm), configured with a chain file",
                envoy::MODULE
            );
            for f in registry::FILTERS {
                println!("{:<10} {}", f.name, f.summary);
            }
            Ok(())
        }
    }
}
