//! Service configuration from the environment. Bad values fail at start-up with one line that
//! names the variable; secrets are wrapped in [`Secret`] and never printed.

pub use crate::foundation::env::{
    flag, positive, seconds, ConfigError, Env, LogFormat, ProcessEnv, Secret,
};
use crate::guard::auth::ApiKeys;
use crate::kafka::KafkaConfig;

/// Everything a service needs from the environment.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service name (`customer-service`, ...).
    pub name: &'static str,
    /// HTTP port (`PORT`).
    pub port: u16,
    /// Database URL: `DATABASE_URL`, else the composed URL of a bound Databases for PostgreSQL
    /// instance (`DATABASE_CONNECTION`, see [`crate::store::db_binding`]), else
    /// `sqlite://data/<name>.db` (see [`database_from`]).
    pub database_url: String,
    /// The CA a PostgreSQL server's certificate must chain to (`DATABASE_CA_CERT_BASE64`: base64
    /// of its PEM text, a managed service's `certificate_base64`; else, for a bound instance, the
    /// binding's certificate); see [`crate::store::db_tls`].
    pub database_ca: Option<crate::store::db::DatabaseCa>,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// API keys (`API_KEYS` and `API_KEYS_FILE`, see [`crate::guard::auth`]); none = no key asked for.
    pub api_keys: ApiKeys,
    /// Where the HTTP server listens (`BIND_ADDRESS`, `ALLOW_ANONYMOUS`): loopback only without
    /// keys unless said otherwise (see [`crate::guard::bind`]).
    pub bind: crate::guard::bind::Bind,
    /// Log format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// OTLP endpoint for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// How consumers batch and retry.
    pub consumer: ConsumerSettings,
    /// HTTP server guards: header read timeout, connection cap, rate limit.
    pub http: crate::guard::server::ServerSettings,
    /// Whether start-up creates the topics (`KAFKA_CREATE_TOPICS`, default true); false when
    /// they are created beforehand and the service's credential may not create topics.
    pub create_topics: bool,
    /// Whether start-up alters existing topics whose configs differ from the table
    /// (`KAFKA_FIX_TOPIC_CONFIGS`, default false: they are only reported). Needs a credential
    /// that may alter topic configs.
    pub fix_topic_configs: bool,
    /// How long work may wait without progress before `/readyz` says not ready
    /// (`READY_STALL_SECS`, default 120): a wedged partition, a relay that publishes nothing.
    pub ready_stall: std::time::Duration,
    /// How long inbox keys are kept and how the pruner runs (see [`crate::events::retention`]).
    pub retention: crate::events::retention::RetentionSettings,
    /// Where the service's metrics go and what its `/metrics` renders: the process-wide
    /// registry, or a private one for a service sharing its process (tests; see
    /// [`crate::foundation::metrics_scope`]).
    pub metrics: crate::foundation::metrics_scope::Registry,
}

/// How consumers batch and retry (`CONSUMER_MAX_BATCH`, `CONSUMER_RETRY_LIMIT_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Most records of a partition applied in one database transaction (500).
    pub max_batch: usize,
    /// How long a record may fail transiently before it is dead-lettered (300 s).
    pub retry_limit: std::time::Duration,
}

impl ConsumerSettings {
    /// Reads the settings from `env`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_batch: positive(env, "CONSUMER_MAX_BATCH", 500)?,
            retry_limit: seconds(
                env,
                "CONSUMER_RETRY_LIMIT_SECS",
                std::time::Duration::from_secs(300),
            )?,
        })
    }
}

/// The keys of `API_KEYS` (a comma list) and of the file `API_KEYS_FILE` names.
pub fn api_keys_from(env: &impl Env) -> Result<ApiKeys, ConfigError> {
    let listed = ApiKeys::parse(env.var("API_KEYS").as_deref().unwrap_or("").split(','))
        .map_err(|e| ConfigError::new("API_KEYS", e.to_string()))?;
    let Some(path) = env.var("API_KEYS_FILE") else {
        return Ok(listed);
    };
    let path = path.trim();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("API_KEYS_FILE", format!("cannot read `{path}`: {e}")))?;
    ApiKeys::parse_file(&text)
        .and_then(|filed| listed.merged(filed))
        .map_err(|e| ConfigError::new("API_KEYS_FILE", e.to_string()))
}

/// The PostgreSQL CA of `DATABASE_CA_CERT_BASE64`, when set and not blank.
pub fn database_ca_from(
    env: &impl Env,
) -> Result<Option<crate::store::db::DatabaseCa>, ConfigError> {
    let variable = crate::store::db_tls::CA_VARIABLE;
    match env.var(variable).filter(|text| !text.trim().is_empty()) {
        None => Ok(None),
        Some(text) => crate::store::db::DatabaseCa::from_base64(&text)
            .map(Some)
            .map_err(|e| ConfigError::new(variable, e.to_string())),
    }
}

/// The database of service `name` and the CA its server must chain to, in this order:
/// 1. `DATABASE_URL` when set (with `DATABASE_CA_CERT_BASE64`): an explicit URL always wins, and
///    a binding is then ignored;
/// 2. else a bound Databases for PostgreSQL instance, `DATABASE_CONNECTION` (the credential's
///    `connection`, see [`crate::store::db_binding`]): its `composed` URL, in the database
///    `DATABASE_NAME` when set, and its `certificate_base64` as the CA unless
///    `DATABASE_CA_CERT_BASE64` is set;
/// 3. else `sqlite://data/<name>.db`.
pub fn database_from(
    env: &impl Env,
    name: &str,
) -> Result<(String, Option<crate::store::db::DatabaseCa>), ConfigError> {
    use crate::store::db_binding::{BoundDatabase, BINDING_VARIABLE, NAME_VARIABLE};
    let ca = database_ca_from(env)?;
    if let Some(url) = env.var("DATABASE_URL") {
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        return Ok((url, ca));
    }
    if let Some(credential) = env.var(BINDING_VARIABLE) {
        let bound = BoundDatabase::from_credential(&credential, env.var(NAME_VARIABLE).as_deref())
            .map_err(|e| ConfigError::new(BINDING_VARIABLE, e.to_string()))?;
        return Ok((bound.url, ca.or(bound.ca)));
    }
    Ok((format!("sqlite://data/{name}.db"), ca))
}

impl From<&ServiceConfig> for crate::foundation::telemetry::TelemetrySettings {
    fn from(config: &ServiceConfig) -> Self {
        Self {
            name: config.name,
            log_format: config.log_format,
            otlp_endpoint: config.otlp_endpoint.clone(),
        }
    }
}

impl ServiceConfig {
    /// Reads the configuration of service `name` (default port `default_port`) from `env`.
    pub fn from_env(
        name: &'static str,
        default_port: u16,
        env: &impl Env,
    ) -> Result<Self, ConfigError> {
        let port = match env.var("PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ConfigError::new("PORT", format!("`{p}` is not a TCP port")))?,
            None => default_port,
        };
        let (database_url, database_ca) = database_from(env, name)?;
        let api_keys = api_keys_from(env)?;
        let bind = crate::guard::bind::Bind::from_env(env, &api_keys)?;
        let log_format = match env.var("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") | Some("text") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("`{other}` is not `json` or `pretty`"),
                ))
            }
        };
        let otlp_endpoint = env
            .var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|e| e.trim().to_string());
        if let Some(endpoint) = &otlp_endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "must start with http:// or https:// (traces are exported over OTLP/HTTP)",
                ));
            }
        }
        let http = crate::guard::server::ServerSettings::from_env(env, &api_keys)?;
        Ok(Self {
            name,
            port,
            database_url,
            database_ca,
            kafka: KafkaConfig::from_env(env)?,
            api_keys,
            bind,
            log_format,
            otlp_endpoint,
            consumer: ConsumerSettings::from_env(env)?,
            http,
            create_topics: flag(env, "KAFKA_CREATE_TOPICS", true)?,
            fix_topic_configs: flag(env, "KAFKA_FIX_TOPIC_CONFIGS", false)?,
            ready_stall: seconds(
                env,
                "READY_STALL_SECS",
                crate::foundation::health::DEFAULT_STALL,
            )?,
            retention: crate::events::retention::RetentionSettings::from_env(env)?,
            metrics: crate::foundation::metrics_scope::Registry::process(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let config = ServiceConfig::from_env("customer-service", 3001, &[("X", "")]).unwrap();
        assert_eq!(config.port, 3001);
        assert_eq!(config.database_url, "sqlite://data/customer-service.db");
        assert!(config.api_keys.is_empty());
        assert!(config.bind.address.is_loopback());
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.ready_stall, std::time::Duration::from_secs(120));
        let stall = ServiceConfig::from_env("s", 1, &[("READY_STALL_SECS", "30")]).unwrap();
        assert_eq!(stall.ready_stall, std::time::Duration::from_secs(30));
        let bad = ServiceConfig::from_env("s", 1, &[("READY_STALL_SECS", "soon")]).unwrap_err();
        assert_eq!(bad.variable, "READY_STALL_SECS");
    }

    #[test]
    fn reads_port_database_keys_and_format() {
        let env = [
            ("PORT", "8080"),
            ("DATABASE_URL", "postgres://u@h/db"),
            (
                "API_KEYS",
                " teller:transactions:write:k1-0123456789abcdefghijkl, ,\
                 ops:customers:read+console:read:k2-0123456789abcdefghijkl ",
            ),
            ("LOG_FORMAT", "json"),
        ];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.database_url, "postgres://u@h/db");
        assert_eq!(
            config.api_keys.describe(),
            [
                "teller:transactions:write",
                "ops:customers:read+console:read"
            ]
        );
        assert!(!config.bind.address.is_loopback(), "keys: all interfaces");
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = ServiceConfig::from_env("s", 1, &[("PORT", "http")]).unwrap_err();
        assert_eq!(err.variable, "PORT");
        let err = ServiceConfig::from_env("s", 1, &[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let ca = [("DATABASE_CA_CERT_BASE64", "not base64!")];
        let err = ServiceConfig::from_env("s", 1, &ca).unwrap_err();
        assert_eq!(err.variable, "DATABASE_CA_CERT_BASE64");
        let blank = ServiceConfig::from_env("s", 1, &[("DATABASE_CA_CERT_BASE64", " ")]).unwrap();
        assert!(blank.database_ca.is_none());
        let err = ServiceConfig::from_env("s", 1, &[("LOG_FORMAT", "xml")]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid configuration: LOG_FORMAT:"));
    }

    /// The `connection` object of a Databases for PostgreSQL credential, as a binding with the
    /// prefix DATABASE hands it over (DATABASE_CONNECTION).
    fn bound_connection() -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .encode(include_str!("../../tests/fixtures/unrelated-ca.pem"));
        format!(
            r#"{{"postgres": {{"composed": ["postgres://ibm_cloud_u:b0und-PW@abc.databases.appdomain.cloud:31234/ibmclouddb?sslmode=verify-full"],
                "certificate": {{"certificate_base64": "{ca}"}}}}}}"#
        )
    }

    #[test]
    fn a_bound_postgresql_instance_gives_the_url_and_the_ca() {
        let connection = bound_connection();
        let env = [
            ("DATABASE_CONNECTION", connection.as_str()),
            ("DATABASE_NAME", "customer_service"),
        ];
        let config = ServiceConfig::from_env("customer-service", 3001, &env).unwrap();
        assert_eq!(
            config.database_url,
            "postgres://ibm_cloud_u:b0und-PW@abc.databases.appdomain.cloud:31234/customer_service?sslmode=verify-full"
        );
        let ca = config.database_ca.expect("the binding's CA");
        assert_eq!(
            ca.pem(),
            include_str!("../../tests/fixtures/unrelated-ca.pem").as_bytes()
        );
    }

    #[test]
    fn a_plain_database_url_wins_over_a_binding() {
        let connection = bound_connection();
        let env = [
            ("DATABASE_URL", "postgres://u:pw@db.example.com:5432/x"),
            ("DATABASE_CONNECTION", connection.as_str()),
        ];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert_eq!(config.database_url, "postgres://u:pw@db.example.com:5432/x");
        assert!(
            config.database_ca.is_none(),
            "the binding's CA goes with its URL"
        );
        // DATABASE_CA_CERT_BASE64 is the CA of either.
        use base64::Engine;
        let other = base64::engine::general_purpose::STANDARD
            .encode(include_str!("../../tests/fixtures/unrelated-ca.pem"));
        let env = [
            ("DATABASE_CONNECTION", connection.as_str()),
            ("DATABASE_CA_CERT_BASE64", other.as_str()),
        ];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert!(config
            .database_url
            .contains("abc.databases.appdomain.cloud"));
        assert!(config.database_ca.is_some());
    }

    #[test]
    fn a_malformed_binding_names_the_variable_never_the_password() {
        let cut = r#"{"postgres": {"composed": ["postgres://ibm_cloud_u:b0und-PW@abc"#;
        let err = ServiceConfig::from_env("s", 1, &[("DATABASE_CONNECTION", cut)]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_CONNECTION");
        assert!(err.to_string().contains("is not JSON"), "{err}");
        assert!(!err.to_string().contains("b0und-PW"), "{err}");
        let no_ca = r#"{"postgres": {"composed": ["postgres://u:b0und-PW@abc:1/db"], "certificate": {"certificate_base64": "b0und-PW!"}}}"#;
        let err = ServiceConfig::from_env("s", 1, &[("DATABASE_CONNECTION", no_ca)]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_CONNECTION");
        assert!(err.to_string().contains("certificate_base64"), "{err}");
        assert!(!err.to_string().contains("b0und-PW"), "{err}");
    }

    #[test]
    fn the_otlp_endpoint_is_optional_and_must_be_http() {
        let config = ServiceConfig::from_env("s", 1, &[("X", "")]).unwrap();
        assert_eq!(config.otlp_endpoint, None);
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", " http://collector:4318 ")];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")];
        let err = ServiceConfig::from_env("s", 1, &env).unwrap_err();
        assert_eq!(err.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
    }

    #[test]
    fn keys_come_from_the_list_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(
            &file,
            "# rotated 2026-11\nci:customers:write:k3-0123456789abcdefghijkl\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let env = [
            ("API_KEYS", "dash:console:read:k2-0123456789abcdefghijkl"),
            ("API_KEYS_FILE", path),
        ];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert_eq!(
            config.api_keys.describe(),
            ["dash:console:read", "ci:customers:write"]
        );
        let err =
            ServiceConfig::from_env("s", 1, &[("API_KEYS_FILE", "/nonexistent/keys")]).unwrap_err();
        assert_eq!(err.variable, "API_KEYS_FILE");
        for list in [
            "a:root:secret-x-0123456789abcdefghijkl",
            "a:console:read:secret-x",
            "secret-x-0123456789abcdefghijkl",
        ] {
            let err = ServiceConfig::from_env("s", 1, &[("API_KEYS", list)]).unwrap_err();
            assert_eq!(err.variable, "API_KEYS");
            assert!(!err.to_string().contains("secret-x"), "{err}");
        }
        std::fs::write(&file, "ci:customers:write:secret-x\n").unwrap();
        let err = ServiceConfig::from_env("s", 1, &[("API_KEYS_FILE", path)]).unwrap_err();
        assert_eq!(err.variable, "API_KEYS_FILE");
        assert!(!err.to_string().contains("secret-x"), "{err}");
    }

    #[test]
    fn without_keys_a_service_stays_on_loopback_unless_told_otherwise() {
        let err = ServiceConfig::from_env("s", 1, &[("BIND_ADDRESS", "0.0.0.0")]).unwrap_err();
        assert_eq!(err.variable, "BIND_ADDRESS");
        let env = [("BIND_ADDRESS", "0.0.0.0"), ("ALLOW_ANONYMOUS", "true")];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert!(config.bind.anonymous && !config.bind.address.is_loopback());
    }

    #[test]
    fn topic_creation_can_be_turned_off() {
        let config = ServiceConfig::from_env("s", 1, &[("X", "")]).unwrap();
        assert!(config.create_topics);
        let config = ServiceConfig::from_env("s", 1, &[("KAFKA_CREATE_TOPICS", "false")]).unwrap();
        assert!(!config.create_topics);
        assert!(!config.fix_topic_configs);
        let config =
            ServiceConfig::from_env("s", 1, &[("KAFKA_FIX_TOPIC_CONFIGS", "true")]).unwrap();
        assert!(config.fix_topic_configs);
        let err = ServiceConfig::from_env("s", 1, &[("KAFKA_CREATE_TOPICS", "off")]).unwrap_err();
        assert_eq!(err.variable, "KAFKA_CREATE_TOPICS");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let env = [("API_KEYS", "ops:console:read:topsecret-0123456789abcdef")];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
