//! The config turned, once at load, into the contract requests are checked
//! against: every rule's schemas compiled to validators, OpenAPI operations
//! appended after the explicit rules.
//!
//! References resolve inside the document only: every validator is built
//! offline (a `$ref` to anything not in the document fails the build, and so
//! refuses the config), and the crate is built without its HTTP and file
//! retrievers, so nothing could be fetched even by mistake.

use crate::config::{Config, Limits, RuleConfig, Unmatched};
use crate::media::MediaRange;
use crate::openapi::{self, OpenApi};
use crate::query::{coercions_for, Coercions};
use crate::report::{declared_names, Place, Violation, MAX_ERRORS};
use jsonschema::{Draft, Registry, Validator};
use palisade_core::config::ConfigError;
use palisade_core::method::Method;
use palisade_core::route::{Match, RouteInput, Rule};
use serde_json::Value;
use std::collections::BTreeSet;
use std::rc::Rc;

/// A compiled JSON Schema and the property names its pointers may show.
pub struct Schema {
    validator: Validator,
    names: Rc<BTreeSet<String>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("draft", &self.validator.draft())
            .finish()
    }
}

impl Schema {
    /// Appends the instance's violations, up to [`MAX_ERRORS`] in `out`.
    pub fn check(&self, place: Place, instance: &Value, out: &mut Vec<Violation>) {
        if self.validator.is_valid(instance) {
            return;
        }
        for error in self.validator.iter_errors(instance) {
            if out.len() >= MAX_ERRORS {
                return;
            }
            out.push(Violation::from_error(place, &error, &self.names));
        }
    }
}

/// How schemas of one origin are built.
pub struct SchemaOptions<'r> {
    /// `None`: by `$schema`, else 2020-12.
    pub draft: Option<Draft>,
    pub registry: Option<&'r Registry<'r>>,
    pub validate_formats: bool,
}

/// Builds a validator; the error text is the crate's (schemas are config,
/// so quoting them is fine).
pub fn compile_schema(
    schema: &Value,
    names: Rc<BTreeSet<String>>,
    options: &SchemaOptions<'_>,
) -> Result<Schema, String> {
    let mut builder = jsonschema::options()
        .offline()
        .should_validate_formats(options.validate_formats);
    if let Some(draft) = options.draft {
        builder = builder.with_draft(draft);
    }
    if let Some(registry) = options.registry {
        builder = builder.with_registry(registry);
    }
    let validator = builder.build(schema).map_err(|e| e.to_string())?;
    Ok(Schema { validator, names })
}

/// A body's contract.
#[derive(Debug)]
pub struct BodyCheck {
    pub required: bool,
    /// Applied to JSON media types; `None`: any JSON within the limits.
    pub schema: Option<Schema>,
}

/// A query or path-parameter contract.
#[derive(Debug)]
pub struct ParamCheck {
    pub schema: Schema,
    pub coercions: Coercions,
}

/// One route's compiled contract (an explicit rule or an OpenAPI operation).
#[derive(Debug)]
pub struct Operation {
    pub matcher: Match,
    /// `rules[2]` or `openapi POST /pets`: for logs, from the config only.
    pub label: String,
    pub dry_run: bool,
    /// Accepted body media types; `None`: any.
    pub content_types: Option<Vec<MediaRange>>,
    pub max_body_bytes: u64,
    pub body: Option<BodyCheck>,
    pub query: Option<ParamCheck>,
    pub path: Option<ParamCheck>,
    /// OpenAPI parameter names by position (templates use placeholders).
    pub param_names: Option<Vec<String>>,
}

impl Rule for Operation {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

/// The whole contract, shared by every request of a VM.
#[derive(Debug)]
pub struct Contract {
    pub operations: Vec<Operation>,
    pub unmatched: Unmatched,
    pub limits: Limits,
    pub dry_run: bool,
    pub hold_headers: bool,
}

impl Contract {
    pub fn select(&self, input: &RouteInput<'_>) -> Option<&Operation> {
        palisade_core::route::first_match(&self.operations, input)
    }

    /// Methods some operation accepts on this path (for 405 and `Allow`).
    pub fn allowed_methods(&self, input: &RouteInput<'_>) -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|m| {
                let probe = RouteInput {
                    method: m.as_str(),
                    ..*input
                };
                self.select(&probe).is_some()
            })
            .collect()
    }

    pub fn needs_route_name(&self) -> bool {
        palisade_core::route::needs_route_name(&self.operations)
    }
}

/// Compiles a validated config.
pub fn compile(config: &Config) -> Result<Contract, ConfigError> {
    let mut operations = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let label = format!("rules[{i}]");
        let mut op = compile_rule(rule, config).map_err(|e| e.within(&label))?;
        op.label = label;
        operations.push(op);
    }
    if let Some(doc) = &config.openapi {
        let api = openapi::derive(doc).map_err(|e| e.within("openapi"))?;
        operations.extend(compile_openapi(&api, config).map_err(|e| e.within("openapi"))?);
    }
    Ok(Contract {
        operations,
        unmatched: config.unmatched,
        limits: config.limits,
        dry_run: config.dry_run,
        hold_headers: config.hold_headers,
    })
}

fn names_of(schema: &Value) -> Rc<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    declared_names(schema, &mut names);
    Rc::new(names)
}

fn compile_rule(rule: &RuleConfig, config: &Config) -> Result<Operation, ConfigError> {
    let options = SchemaOptions {
        draft: None,
        registry: None,
        validate_formats: config.validate_formats,
    };
    let param_check = |field: &str, schema: &Value| -> Result<ParamCheck, ConfigError> {
        let compiled = compile_schema(schema, names_of(schema), &options)
            .map_err(|e| ConfigError::new(field, format!("the schema does not compile: {e}")))?;
        let resolve = |r: &str| local_pointer(schema, r);
        Ok(ParamCheck {
            schema: compiled,
            coercions: coercions_for(schema, &resolve),
        })
    };
    let query = rule
        .query
        .as_ref()
        .map(|s| param_check("query", s))
        .transpose()?;
    let path = rule
        .path_params
        .as_ref()
        .map(|s| param_check("path_params", s))
        .transpose()?;
    let body = match &rule.body {
        None => None,
        Some(b) => Some(BodyCheck {
            required: b.required,
            schema: b
                .schema
                .as_ref()
                .map(|s| {
                    compile_schema(s, names_of(s), &options).map_err(|e| {
                        ConfigError::new("body.schema", format!("the schema does not compile: {e}"))
                    })
                })
                .transpose()?,
        }),
    };
    let content_types = match (&rule.content_types, &body) {
        (Some(types), _) => Some(types.iter().filter_map(|t| MediaRange::parse(t)).collect()),
        (None, Some(_)) => MediaRange::parse("application/json").map(|r| vec![r]),
        (None, None) => None,
    };
    Ok(Operation {
        matcher: rule.matcher.clone(),
        label: String::new(),
        dry_run: rule.dry_run.unwrap_or(config.dry_run),
        content_types,
        max_body_bytes: rule.max_body_bytes.unwrap_or(config.max_body_bytes),
        body,
        query,
        path,
        param_names: None,
    })
}

/// `#/a/b` inside the same schema.
fn local_pointer(root: &Value, reference: &str) -> Option<Value> {
    let fragment = reference.strip_prefix('#')?;
    root.pointer(&openapi::decode_fragment(fragment)).cloned()
}

/// A refusing retriever for the OpenAPI registry: documents reference
/// themselves only.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri}: only references inside the document are resolved").into())
    }
}

fn compile_openapi(api: &OpenApi, config: &Config) -> Result<Vec<Operation>, ConfigError> {
    let registry = Registry::new()
        .retriever(NoRetrieval)
        .retrieve_known_draft_meta_schemas(false)
        .draft(api.draft)
        .add(
            openapi::DOCUMENT_URI,
            api.draft.create_resource(api.doc.clone()),
        )
        .and_then(|b| b.prepare())
        .map_err(|e| ConfigError::new("", format!("the document cannot be indexed: {e}")))?;
    let options = SchemaOptions {
        draft: Some(api.draft),
        registry: Some(&registry),
        validate_formats: config.validate_formats,
    };
    let mut names = BTreeSet::new();
    declared_names(&api.doc, &mut names);
    for op in &api.operations {
        for schema in [&op.path_schema, &op.query_schema].into_iter().flatten() {
            declared_names(schema, &mut names);
        }
    }
    let names = Rc::new(names);
    let resolve = |r: &str| api.resolve(r);
    let mut out = Vec::new();
    for op in &api.operations {
        let at = |what: &str| op.config_path(what);
        let compile = |what: &str, schema: &Value| {
            compile_schema(schema, names.clone(), &options).map_err(|e| {
                ConfigError::new(at(what), format!("the schema does not compile: {e}"))
            })
        };
        let param =
            |what: &str, schema: &Option<Value>| -> Result<Option<ParamCheck>, ConfigError> {
                schema
                    .as_ref()
                    .map(|s| {
                        Ok(ParamCheck {
                            schema: compile(what, s)?,
                            coercions: coercions_for(s, &resolve),
                        })
                    })
                    .transpose()
            };
        let body = match &op.body {
            None => None,
            Some(b) => Some(BodyCheck {
                required: b.required,
                schema: b
                    .json_schema
                    .as_ref()
                    .map(|s| compile("requestBody", s))
                    .transpose()?,
            }),
        };
        out.push(Operation {
            matcher: Match {
                path_template: Some(op.template.clone()),
                methods: Some(vec![op.method]),
                ..Match::default()
            },
            label: format!("openapi {} {}", op.method, op.path),
            dry_run: config.dry_run,
            content_types: op.body.as_ref().map(|b| b.content_types.clone()),
            max_body_bytes: config.max_body_bytes,
            body,
            query: param("parameters", &op.query_schema)?,
            path: param("parameters", &op.path_schema)?,
            param_names: Some(op.param_names.clone()),
        });
    }
    Ok(out)
}
