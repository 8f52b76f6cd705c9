# Input variables, in alphabetical order. Objects carry optional() defaults: set only what differs.

variable "alerts" {
  description = "Monitoring: alert policies (when enabled) on a stale heartbeat (no poll tick for heartbeat_stale_minutes), a dead-letter backlog above dead_letter_threshold, a sustained status-fetch error rate (more than poll_error_threshold failures per 5 minutes, for poll_error_minutes), stalled jobs (stalled_jobs) and Gemini webhooks the API disabled (disabled_webhooks; found by the poller's hourly check); and the operations dashboard (dashboard). Minutes are whole numbers."
  type = object({
    dashboard               = optional(bool, true)
    dead_letter_threshold   = optional(number, 0)
    disabled_webhooks       = optional(bool, true)
    enabled                 = optional(bool, true)
    heartbeat_stale_minutes = optional(number, 10)
    notification_channels   = optional(list(string), [])
    poll_error_minutes      = optional(number, 15)
    poll_error_threshold    = optional(number, 20)
    stalled_jobs            = optional(bool, true)
  })
  default  = {}
  nullable = false
  validation {
    condition     = var.alerts.heartbeat_stale_minutes >= 3 && var.alerts.heartbeat_stale_minutes <= 1380 && floor(var.alerts.heartbeat_stale_minutes) == var.alerts.heartbeat_stale_minutes
    error_message = "alerts.heartbeat_stale_minutes must be a whole number of minutes between 3 and 1380 (23 h): Cloud Monitoring takes alert durations in whole minutes only."
  }
  validation {
    condition     = var.alerts.dead_letter_threshold >= 0
    error_message = "alerts.dead_letter_threshold must not be negative."
  }
  validation {
    condition     = var.alerts.poll_error_threshold >= 0 && var.alerts.poll_error_minutes >= 5 && var.alerts.poll_error_minutes <= 1380 && floor(var.alerts.poll_error_minutes) == var.alerts.poll_error_minutes
    error_message = "alerts.poll_error_threshold must not be negative; alerts.poll_error_minutes must be a whole number of minutes between 5 and 1380 (Cloud Monitoring takes alert durations in whole minutes only)."
  }
}

variable "allow_any_destination" {
  description = "Let the reactor copy into any bucket (RELAY_ALLOWED_BUCKETS=*), an explicit opt-in: whoever can write the relay's Firestore database then chooses where copies go, within the buckets the reactor's account can write (it is granted only allowed_buckets and the default destination's bucket here). False: copies go only where allowed_buckets and default_destination say."
  type        = bool
  default     = false
  nullable    = false
}

variable "allowed_buckets" {
  description = "Where outputs may be copied (RELAY_ALLOWED_BUCKETS): entries \"bucket\" or \"bucket/prefix\" (a prefix allows that folder and everything under it). The reactor gets roles/storage.objectUser on each entry's bucket. The default destination is added. Empty, no default destination and allow_any_destination false: the reactor refuses every copy."
  type        = list(string)
  default     = []
  nullable    = false
  validation {
    condition     = alltrue([for b in var.allowed_buckets : can(regex("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^/]+)*$", b)) && !can(regex("/\\.\\.?(/|$)", b))])
    error_message = "allowed_buckets must hold bucket or bucket/prefix entries (no gs://, no trailing /, no . or .. segments)."
  }
}

variable "build_service_account" {
  description = "Service account Cloud Build uses to build the functions, as projects/PROJECT/serviceAccounts/EMAIL. Null: a build account is created (PREFIX-build). Either way the build account gets roles/logging.logWriter, writer on the functions' Artifact Registry repository and object viewer on the source bucket."
  type        = string
  default     = null
  validation {
    condition     = var.build_service_account == null || can(regex("^projects/[^/]+/serviceAccounts/[^/@]+@[^/]+$", var.build_service_account))
    error_message = "build_service_account must look like projects/PROJECT/serviceAccounts/EMAIL."
  }
}

variable "bundle_path" {
  description = "Path of the function bundle built by `make bundle`. Null means ../dist/function-source.zip beside this folder."
  type        = string
  default     = null
}

variable "default_destination" {
  description = "gs://bucket/prefix outputs are copied to when a job has no destination (RELAY_DEFAULT_DESTINATION). Null: jobs without a destination are not copied."
  type        = string
  default     = null
  validation {
    condition     = var.default_destination == null || can(regex("^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", var.default_destination))
    error_message = "default_destination must look like gs://bucket or gs://bucket/prefix."
  }
}

variable "endpoints" {
  description = "API roots. vertex_base_url null: per job, https://{location}-aiplatform.googleapis.com."
  type = object({
    gemini_base_url = optional(string, "https://generativelanguage.googleapis.com")
    vertex_base_url = optional(string)
  })
  default  = {}
  nullable = false
  validation {
    condition     = can(regex("^https://", var.endpoints.gemini_base_url)) && (var.endpoints.vertex_base_url == null || can(regex("^https://", coalesce(var.endpoints.vertex_base_url, "https://"))))
    error_message = "endpoints must be https:// URLs."
  }
}

variable "events_topic" {
  description = "Name of the events topic (RELAY_EVENTS_TOPIC). Null: PREFIX-events."
  type        = string
  default     = null
  validation {
    condition     = var.events_topic == null || can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", coalesce(var.events_topic, "x")))
    error_message = "events_topic must be a valid Pub/Sub topic id."
  }
}

variable "firestore" {
  description = "Firestore: the relay's own database (database_id, null: PREFIX-db; created when create_database is true, the default, so that write access to it, which is administration of the relay, is granted on it alone: every roles/datastore.user grant here is conditioned on it), the jobs collection and how many days finished records are kept (0 keeps them). To use an existing database (e.g. \"(default)\") set create_database = false and its database_id."
  type = object({
    collection        = optional(string, "batch_jobs")
    create_database   = optional(bool, true)
    database_id       = optional(string)
    delete_protection = optional(bool, true)
    location_id       = optional(string)
    retention_days    = optional(number, 30)
  })
  default  = {}
  nullable = false
  validation {
    condition     = can(regex("^[A-Za-z0-9_.~+%-]{1,255}$", var.firestore.collection)) && !startswith(var.firestore.collection, "goog")
    error_message = "firestore.collection must be a valid collection id."
  }
  validation {
    condition     = var.firestore.database_id == null || can(regex("^(\\(default\\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$", coalesce(var.firestore.database_id, "x")))
    error_message = "firestore.database_id must be \"(default)\" or 4-63 lowercase letters, digits and hyphens, starting with a letter."
  }
  validation {
    condition     = var.firestore.retention_days >= 0 && floor(var.firestore.retention_days) == var.firestore.retention_days
    error_message = "firestore.retention_days must be a whole number of days, 0 or more."
  }
}

variable "gemini_api_key_secret" {
  description = "Secret Manager secret holding the Gemini API key (its id, never the value) and the version the functions read (a number, never \"latest\": a secret environment variable is read when an instance starts, so a pinned version decides which value runs, and changing it rolls the functions), exposed to every function as RELAY_GEMINI_API_KEY. Null for Vertex AI only (then neither the gemini watch scope nor webhooks can be used)."
  type = object({
    project_id = optional(string)
    secret_id  = string
    version    = string
  })
  default = null
  validation {
    condition     = var.gemini_api_key_secret == null || can(regex("^[A-Za-z0-9_-]{1,255}$", try(var.gemini_api_key_secret.secret_id, "")))
    error_message = "gemini_api_key_secret.secret_id must be a secret id (not a path, not the key)."
  }
  validation {
    condition     = var.gemini_api_key_secret == null || can(regex("^[1-9][0-9]*$", try(var.gemini_api_key_secret.version, "")))
    error_message = "gemini_api_key_secret.version must be a version number such as \"3\" (not \"latest\"): pin the version the functions read (gcloud secrets versions list SECRET)."
  }
}

variable "ingress_settings" {
  description = "Ingress of the poller and the reactor. ALLOW_INTERNAL_ONLY still admits Cloud Scheduler and Pub/Sub push from the same project. (The webhook function, when enabled, is always ALLOW_ALL.)"
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "poller" {
  description = "The poll_jobs function and its schedule: memory, timeout (the tick deadline is set 30 s below it), status-request concurrency and retry settings, the per-job publish lease (against overlapping ticks), whether the relay reads Vertex AI jobs (vertex_ai: roles/aiplatform.viewer for the poller in this project, vertex_projects and the watched Vertex AI scopes' projects; null: true unless a Gemini API key is set and no Vertex AI project or scope is named, i.e. a Gemini-only relay gets no Vertex AI role), extra projects whose Vertex AI jobs it (and the reactor, at copy time) may read (vertex_projects); the Scheduler interval in seconds (tick_interval_s, must match schedule), the longest a job goes unpolled (max_poll_interval_s), after how long without change a job is reported stalled (stall_after_s, 0 = never) and how many parallel parts a tick is split into (fanout, 1-64; each instance serves one request at a time, so max_instances must be at least 2 * fanout); cpu: the vCPU of each instance (available_cpu; default 1 whatever the memory: at 512Mi Cloud Run functions would give 1/3 vCPU, under which one instance's tick over 10,000 jobs takes 30-48 s of a 60 s interval (17.6 s at 1 vCPU), see docs/benchmarks.md \"Fractional vCPU\"; null: available_cpu left unset, the memory's share for a new function, while a deployed one keeps the vCPU it has: give the number to change it); min_instances: instances kept warm (default 0)."
  type = object({
    concurrency         = optional(number, 32)
    cpu                 = optional(number, 1)
    fanout              = optional(number, 1)
    lost_after_s        = optional(number, 86400)
    max_attempts        = optional(number, 5)
    max_instances       = optional(number, 3)
    max_poll_interval_s = optional(number, 300)
    memory              = optional(string, "512Mi")
    min_instances       = optional(number, 0)
    publish_lease_s     = optional(number, 60)
    request_timeout_s   = optional(number, 20)
    schedule            = optional(string, "* * * * *")
    stall_after_s       = optional(number, 21600)
    tick_interval_s     = optional(number, 60)
    time_zone           = optional(string, "Etc/UTC")
    timeout_s           = optional(number, 300)
    vertex_ai           = optional(bool)
    vertex_projects     = optional(list(string), [])
    vertex_region_qpm   = optional(number, 600)
  })
  default  = {}
  nullable = false
  validation {
    condition     = var.poller.timeout_s >= 60 && var.poller.timeout_s <= 1800
    error_message = "poller.timeout_s must be between 60 and 1800 (Cloud Scheduler's longest attempt deadline)."
  }
  validation {
    condition     = var.poller.concurrency >= 1 && var.poller.concurrency <= 1000
    error_message = "poller.concurrency must be between 1 and 1000."
  }
  validation {
    condition     = var.poller.max_attempts >= 1 && var.poller.max_attempts <= 20
    error_message = "poller.max_attempts must be between 1 and 20."
  }
  validation {
    condition     = var.poller.request_timeout_s > 0 && var.poller.request_timeout_s < var.poller.timeout_s - 30
    error_message = "poller.request_timeout_s must be positive and shorter than the tick (timeout_s - 30)."
  }
  validation {
    condition     = var.poller.publish_lease_s >= 0 && var.poller.publish_lease_s <= 3600
    error_message = "poller.publish_lease_s must be between 0 and 3600."
  }
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.poller.memory))
    error_message = "poller.memory must look like 512Mi or 1Gi."
  }
  validation {
    condition     = var.poller.cpu == null || try((var.poller.cpu >= 0.08 && var.poller.cpu < 1) || contains([1, 2, 4, 6, 8], var.poller.cpu), false)
    error_message = "poller.cpu must be null (the vCPU Cloud Run functions give poller.memory: 512Mi 1/3 vCPU), a fraction between 0.08 and 1, or 1, 2, 4, 6 or 8 vCPU."
  }
  # Cloud Run's CPU and memory pairs: below 0.5 vCPU at most 512 MiB, below 1 vCPU at most 1 GiB, at most 4 GiB
  # per whole vCPU; 4 vCPU need at least 2 GiB, 6 and 8 at least 4 GiB.
  validation {
    condition     = var.poller.cpu == null || try((var.poller.cpu >= 0.5 || tonumber(regex("^[0-9]+", var.poller.memory)) * (endswith(var.poller.memory, "Gi") ? 1024 : 1) <= 512) && (var.poller.cpu >= 1 || tonumber(regex("^[0-9]+", var.poller.memory)) * (endswith(var.poller.memory, "Gi") ? 1024 : 1) <= 1024) && (var.poller.cpu < 1 || tonumber(regex("^[0-9]+", var.poller.memory)) * (endswith(var.poller.memory, "Gi") ? 1024 : 1) <= var.poller.cpu * 4096) && (var.poller.cpu < 4 || tonumber(regex("^[0-9]+", var.poller.memory)) * (endswith(var.poller.memory, "Gi") ? 1024 : 1) >= 2048) && (var.poller.cpu < 6 || tonumber(regex("^[0-9]+", var.poller.memory)) * (endswith(var.poller.memory, "Gi") ? 1024 : 1) >= 4096), true)
    error_message = "poller.cpu and poller.memory are not a pair Cloud Run accepts: below 0.5 vCPU at most 512Mi, below 1 vCPU at most 1Gi, at most 4Gi per whole vCPU, 4 vCPU at least 2Gi, 6 or 8 vCPU at least 4Gi."
  }
  validation {
    condition     = var.poller.min_instances >= 0 && floor(var.poller.min_instances) == var.poller.min_instances
    error_message = "poller.min_instances must be a whole number between 0 and poller.max_instances."
  }
  validation {
    condition     = var.poller.min_instances <= var.poller.max_instances
    error_message = "poller.min_instances must be a whole number between 0 and poller.max_instances."
  }
  validation {
    condition     = var.poller.fanout >= 1 && var.poller.fanout <= 64 && floor(var.poller.fanout) == var.poller.fanout
    error_message = "poller.fanout must be a whole number between 1 and 64."
  }
  # Each instance serves one request at a time (functions.tf): a tick takes `fanout` instances (the
  # coordinator with part 0, and fanout - 1 parts), and as many again for the next tick, which Scheduler
  # starts while the last parts of this one may still run. A part finding none free gets 429, is pushed
  # again with backoff and, after 5 attempts, dead-lettered.
  validation {
    condition     = 2 * var.poller.fanout <= var.poller.max_instances
    error_message = "poller.max_instances must be at least 2 * poller.fanout: each poller instance serves one request at a time, and a tick needs one instance per part (the coordinator runs part 0) with as many again for the next, overlapping tick; parts beyond that get 429 and are dead-lettered."
  }
  validation {
    condition     = var.poller.fanout == 1 || var.poller.timeout_s <= 600
    error_message = "With poller.fanout > 1, poller.timeout_s must be at most 600 (the tick-parts subscription's longest ack deadline)."
  }
  validation {
    condition     = var.poller.stall_after_s >= 0 && var.poller.stall_after_s <= 31536000
    error_message = "poller.stall_after_s must be between 0 (never report stalls) and 31536000 (a year)."
  }
  validation {
    condition     = var.poller.max_poll_interval_s >= 0 && var.poller.max_poll_interval_s <= 86400
    error_message = "poller.max_poll_interval_s must be between 0 and 86400."
  }
  validation {
    condition     = var.poller.tick_interval_s >= 60 && var.poller.tick_interval_s <= 86400 && var.poller.tick_interval_s % 60 == 0
    error_message = "poller.tick_interval_s must be a whole number of minutes, in seconds, between 60 and 86400 (Cloud Scheduler runs at most once a minute)."
  }
  # For the "* * * * *" and "*/N * * * *" forms the interval is known: tick_interval_s must match it.
  # (For other cron expressions set tick_interval_s to the typical gap between two runs.)
  validation {
    condition = (
      can(regex("^\\*(/[0-9]+)? \\* \\* \\* \\*$", var.poller.schedule))
      ? var.poller.tick_interval_s == 60 * (var.poller.schedule == "* * * * *" ? 1 : tonumber(regex("^\\*/([0-9]+) ", var.poller.schedule)[0]))
      : true
    )
    error_message = "poller.tick_interval_s does not match poller.schedule (\"* * * * *\" is 60, \"*/5 * * * *\" is 300)."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (2 to 18 lowercase letters, digits or hyphens)."
  type        = string
  default     = "batch-relay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,16}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-18 characters: lowercase letters, digits, hyphens; start with a letter."
  }
}

variable "project_id" {
  description = "Project to deploy into (Firestore, Pub/Sub, the functions)."
  type        = string
}

variable "pubsub_kms_key_name" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) encrypting both topics; null keeps Google-managed encryption. The Pub/Sub service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null
}

variable "reactor" {
  description = "The on_job_event function and its push subscription: memory, timeout (at most 540 s, below the 600 s ack deadline), delivery retry backoff and attempts before dead-lettering; how long a job that reports success without an output location yet is redelivered before its copy fails with no_output (output_wait_s, RELAY_OUTPUT_WAIT_S; keep it within the redelivery attempts' reach), and a price table replacing the shipped one for cost estimates (RELAY_PRICES: a path in the bundle or a gs://bucket/object the reactor's account can read)."
  type = object({
    max_delivery_attempts = optional(number, 10)
    max_instances         = optional(number, 10)
    maximum_backoff_s     = optional(number, 600)
    memory                = optional(string, "1Gi")
    minimum_backoff_s     = optional(number, 10)
    output_wait_s         = optional(number, 1800)
    prices                = optional(string)
    timeout_s             = optional(number, 540)
  })
  default  = {}
  nullable = false
  validation {
    condition     = var.reactor.timeout_s >= 60 && var.reactor.timeout_s <= 540
    error_message = "reactor.timeout_s must be between 60 and 540."
  }
  validation {
    condition     = var.reactor.max_delivery_attempts >= 5 && var.reactor.max_delivery_attempts <= 100
    error_message = "reactor.max_delivery_attempts must be between 5 and 100."
  }
  validation {
    condition     = var.reactor.minimum_backoff_s >= 0 && var.reactor.minimum_backoff_s <= var.reactor.maximum_backoff_s && var.reactor.maximum_backoff_s <= 600
    error_message = "reactor backoffs must satisfy 0 <= minimum_backoff_s <= maximum_backoff_s <= 600."
  }
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.reactor.memory))
    error_message = "reactor.memory must look like 512Mi or 1Gi."
  }
  validation {
    condition     = var.reactor.output_wait_s >= 0 && var.reactor.output_wait_s <= 86400
    error_message = "reactor.output_wait_s must be between 0 and 86400."
  }
  validation {
    condition     = var.reactor.prices == null || can(regex("^(gs://[a-z0-9][a-z0-9._-]+/.+|[^:]+)$", var.reactor.prices))
    error_message = "reactor.prices must be a file path or a gs://bucket/object URI."
  }
}

variable "region" {
  description = "Region of the functions, the scheduler job and the source bucket (and of a created Firestore database unless firestore.location_id is set)."
  type        = string
}

variable "source_buckets" {
  description = "Buckets holding Vertex AI batch outputs: the reactor gets roles/storage.objectViewer on each, and reads Vertex AI outputs from these only (RELAY_SOURCE_BUCKETS). Empty: RELAY_SOURCE_BUCKETS is left unset (any bucket), and the reactor can read none unless granted elsewhere."
  type        = list(string)
  default     = []
  nullable    = false
  validation {
    condition     = alltrue([for b in var.source_buckets : can(regex("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$", b))])
    error_message = "source_buckets must hold bucket names (no gs:// prefix)."
  }
}

variable "watch" {
  description = "Scopes the poller lists jobs in, so their jobs are tracked without `batch-relay track` (RELAY_WATCH): \"gemini\" (every batch the Gemini API key lists; needs gemini_api_key_secret) and \"vertex:projects/PROJECT_ID/locations/LOCATION\" (every Vertex AI batch prediction job there; the poller gets roles/aiplatform.viewer in PROJECT_ID). filter: a Vertex AI list filter for those lists (RELAY_WATCH_FILTER), e.g. labels.team=\"ml\"."
  type = object({
    filter = optional(string)
    scopes = optional(list(string), [])
  })
  default  = {}
  nullable = false
  validation {
    condition     = alltrue([for s in var.watch.scopes : can(regex("^(gemini|vertex:projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z][a-z0-9-]{0,62})$", s))])
    error_message = "watch.scopes entries must be \"gemini\" or \"vertex:projects/PROJECT_ID/locations/LOCATION\" (a project id, not a number)."
  }
  validation {
    condition     = var.watch.filter == null ? true : (length(var.watch.filter) <= 2000 && !can(regex("[\\x00-\\x1f]", var.watch.filter)))
    error_message = "watch.filter must be one line of at most 2000 characters."
  }
}

variable "webhooks" {
  description = "Gemini API batch webhooks: when enabled, a third function (on_gemini_webhook, public: the Gemini API sends no Google identity token) receives deliveries and records the batch at once instead of waiting for the next poll. signing_secrets: Secret Manager secret (its id, never the value) whose value is a comma list of whsec_... signing secrets (RELAY_GEMINI_WEBHOOK_SECRETS), and the version the function reads (a number, never \"latest\"); jwks_url: JWKS endpoint for signed-token deliveries (RELAY_GEMINI_JWKS_URL). At least one of the two is needed. cpu: the vCPU of each instance (available_cpu; null, the default: left unset, the memory's share, 1/3 vCPU at 512Mi; a function deployed with a number keeps it until another number is given); min_instances: instances kept warm, billed while idle (default 0: the first delivery after idle starts an instance and waits for it, about 3 s at 1/3 vCPU here, see docs/benchmarks.md \"Fractional vCPU\"; 1 removes that wait)."
  type = object({
    cpu           = optional(number)
    enabled       = optional(bool, false)
    jwks_url      = optional(string)
    max_instances = optional(number, 10)
    memory        = optional(string, "512Mi")
    min_instances = optional(number, 0)
    signing_secrets = optional(object({
      project_id = optional(string)
      secret_id  = string
      version    = string
    }))
    timeout_s = optional(number, 60)
  })
  default  = {}
  nullable = false
  validation {
    condition     = var.webhooks.signing_secrets == null ? true : can(regex("^[A-Za-z0-9_-]{1,255}$", var.webhooks.signing_secrets.secret_id))
    error_message = "webhooks.signing_secrets.secret_id must be a secret id (not a path, not a secret value)."
  }
  validation {
    condition     = var.webhooks.signing_secrets == null ? true : can(regex("^[1-9][0-9]*$", var.webhooks.signing_secrets.version))
    error_message = "webhooks.signing_secrets.version must be a version number such as \"2\" (not \"latest\"): pin the version the webhook function reads (batch-relay webhook register --secret prints it)."
  }
  validation {
    condition     = var.webhooks.jwks_url == null ? true : can(regex("^https://", var.webhooks.jwks_url))
    error_message = "webhooks.jwks_url must be an https:// URL."
  }
  validation {
    condition     = var.webhooks.timeout_s >= 10 && var.webhooks.timeout_s <= 540 && var.webhooks.max_instances >= 1
    error_message = "webhooks.timeout_s must be between 10 and 540; webhooks.max_instances at least 1."
  }
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.webhooks.memory))
    error_message = "webhooks.memory must look like 512Mi or 1Gi."
  }
  validation {
    condition     = var.webhooks.cpu == null || try((var.webhooks.cpu >= 0.08 && var.webhooks.cpu < 1) || contains([1, 2, 4, 6, 8], var.webhooks.cpu), false)
    error_message = "webhooks.cpu must be null (the vCPU Cloud Run functions give webhooks.memory: 512Mi 1/3 vCPU), a fraction between 0.08 and 1, or 1, 2, 4, 6 or 8 vCPU."
  }
  # Cloud Run's CPU and memory pairs: below 0.5 vCPU at most 512 MiB, below 1 vCPU at most 1 GiB, at most 4 GiB
  # per whole vCPU; 4 vCPU need at least 2 GiB, 6 and 8 at least 4 GiB.
  validation {
    condition     = var.webhooks.cpu == null || try((var.webhooks.cpu >= 0.5 || tonumber(regex("^[0-9]+", var.webhooks.memory)) * (endswith(var.webhooks.memory, "Gi") ? 1024 : 1) <= 512) && (var.webhooks.cpu >= 1 || tonumber(regex("^[0-9]+", var.webhooks.memory)) * (endswith(var.webhooks.memory, "Gi") ? 1024 : 1) <= 1024) && (var.webhooks.cpu < 1 || tonumber(regex("^[0-9]+", var.webhooks.memory)) * (endswith(var.webhooks.memory, "Gi") ? 1024 : 1) <= var.webhooks.cpu * 4096) && (var.webhooks.cpu < 4 || tonumber(regex("^[0-9]+", var.webhooks.memory)) * (endswith(var.webhooks.memory, "Gi") ? 1024 : 1) >= 2048) && (var.webhooks.cpu < 6 || tonumber(regex("^[0-9]+", var.webhooks.memory)) * (endswith(var.webhooks.memory, "Gi") ? 1024 : 1) >= 4096), true)
    error_message = "webhooks.cpu and webhooks.memory are not a pair Cloud Run accepts: below 0.5 vCPU at most 512Mi, below 1 vCPU at most 1Gi, at most 4Gi per whole vCPU, 4 vCPU at least 2Gi, 6 or 8 vCPU at least 4Gi."
  }
  validation {
    condition     = var.webhooks.min_instances >= 0 && floor(var.webhooks.min_instances) == var.webhooks.min_instances
    error_message = "webhooks.min_instances must be a whole number between 0 and webhooks.max_instances."
  }
  validation {
    condition     = var.webhooks.min_instances <= var.webhooks.max_instances
    error_message = "webhooks.min_instances must be a whole number between 0 and webhooks.max_instances."
  }
}
