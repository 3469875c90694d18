//! `warrant entity ...` and `warrant facts ...`: entities one at a time, and whole facts
//! imported and exported.

use super::*;

/// How much of an import goes in one message.
const IMPORT_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, clap::Args)]
pub struct EntityArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: EntityCommand,
}

/// Resources, scopes, humans: any entity type the schema declares except identities and
/// approvals, which have commands of their own.
#[derive(Debug, clap::Subcommand)]
pub enum EntityCommand {
    /// Create an entity, or replace it whole.
    Put {
        /// Type::id, e.g. Dataset::sales-2027
        entity: String,
        /// Every attribute, as a JSON object (Cedar's JSON form).
        #[arg(long)]
        attributes: Option<String>,
        /// A parent entity, as Type::id (repeat for more).
        #[arg(long = "parent")]
        parents: Vec<String>,
        /// Tags, as a JSON object, if the schema gives the type any.
        #[arg(long)]
        tags: Option<String>,
        /// Who asked for the change, as Type::id.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
    },
    /// Show any entity (identities and approvals too) in Cedar's JSON form.
    Get { entity: String },
    /// Remove an entity nothing names (no entity, no policy).
    Retire {
        entity: String,
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: FactsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FactsCommand {
    /// Add or replace many entities at once, all or nothing, from a Cedar entities file (a JSON
    /// array) or JSON lines (one entity per line), read and sent as a stream; `-` reads standard
    /// input.
    Import {
        file: PathBuf,
        /// Who asked for the import, as Type::id.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
        /// Skip the rules identities and approvals are held to one at a time (an owner;
        /// separation of duties and a bounded window): for a trusted restore only. Every entity
        /// written is marked unchecked on its record.
        #[arg(long)]
        unchecked: bool,
    },
    /// Write every entity as JSON lines, ordered by uid: what `import` takes back.
    Export {
        /// The file to write instead of standard output.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
}

fn entity_record_json(record: &proto::EntityRecord) -> Value {
    let e = record.entity.clone().unwrap_or_default();
    json!({
        "entity": entity_json(&e.entity),
        "attributes": struct_json(&e.attributes),
        "parents": e.parents.iter().map(|p| entity_json(&Some(p.clone()))).collect::<Vec<_>>(),
        "tags": struct_json(&e.tags),
        "origin": record.origin,
        "updated_at": time_json(&record.updated_at),
        "requester": entity_json(&record.requester),
        "justification": record.justification,
        "retired_at": time_json(&record.retired_at),
    })
}

pub async fn entity(args: EntityArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    let requester =
        |requester: Option<String>| requester.map(|r| parse_entity(&r, "requester")).transpose();
    let record = match args.command {
        EntityCommand::Put {
            entity,
            attributes,
            parents,
            tags,
            requester: asked_by,
            justification,
        } => {
            let spec = proto::EntitySpec {
                entity: Some(parse_entity(&entity, "entity")?),
                attributes: json_object(attributes.as_deref(), "attributes")?,
                parents: parents
                    .iter()
                    .map(|p| parse_entity(p, "parent"))
                    .collect::<anyhow::Result<_>>()?,
                tags: json_object(tags.as_deref(), "tags")?,
            };
            client
                .put_entity(proto::PutEntityRequest {
                    entity: Some(spec),
                    requester: requester(asked_by)?,
                    justification: justification.unwrap_or_default(),
                })
                .await
        }
        EntityCommand::Get { entity } => {
            client
                .get_entity(proto::GetEntityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                })
                .await
        }
        EntityCommand::Retire {
            entity,
            requester: asked_by,
            justification,
        } => {
            client
                .retire_entity(proto::RetireEntityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                    requester: requester(asked_by)?,
                    justification: justification.unwrap_or_default(),
                })
                .await
        }
    };
    print(entity_record_json(
        &record.map_err(call_failed)?.into_inner(),
    ))
}

pub async fn facts(args: FactsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    match args.command {
        FactsCommand::Import {
            file,
            requester,
            justification,
            unchecked,
        } => {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            sender
                .send(proto::ImportFactsRequest {
                    data: Vec::new(),
                    requester: requester
                        .map(|r| parse_entity(&r, "requester"))
                        .transpose()?,
                    justification: justification.unwrap_or_default(),
                    unchecked,
                })
                .await?;
            // The file is read on a thread of its own while the call streams what it sent. The
            // sender outlives a read error until the call is dropped (cancelled), so that a
            // file that breaks half-way never ends the stream as if it were whole.
            let size = (file.as_os_str() != "-")
                .then(|| std::fs::metadata(&file).ok().map(|m| m.len()))
                .flatten();
            let upload = crate::cli::progress::bytes(size, "sending");
            let sent = upload.clone();
            let reading = tokio::task::spawn_blocking(move || {
                let result = send_import(&file, &sender, &sent);
                (result, sender)
            });
            let mut answers = client
                .import_facts(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
                .map_err(call_failed)?
                .into_inner();
            tokio::pin!(reading);
            // Until the file is sent whole, the server speaks only to refuse (too large, say).
            let read = tokio::select! {
                read = &mut reading => read?,
                refused = answers.message() => {
                    upload.finish_and_clear();
                    refused.map_err(call_failed)?;
                    anyhow::bail!("the server ended the import before it was sent");
                }
            };
            let (result, sender) = read;
            upload.finish_and_clear();
            if let Err(error) = result {
                // Dropping the answers cancels the call while the import is still open, so a
                // file that broke half-way is never taken for a whole one.
                drop(answers);
                drop(sender);
                return Err(error.context("nothing was imported"));
            }
            drop(sender);
            // The server reads the import back into the store, then writes it in one
            // transaction; it says how far it has come.
            let importing = crate::cli::progress::bytes(Some(0), "importing");
            let summary = loop {
                let Some(progress) = answers.message().await.map_err(call_failed)? else {
                    anyhow::bail!("the server ended the import without saying how it ended");
                };
                if let Some(done) = progress.done {
                    break done;
                }
                importing.set_length(progress.bytes_total);
                importing.set_position(progress.bytes_read);
            };
            importing.finish_and_clear();
            print(json!({
                "entities": summary.entities,
                "created": summary.created,
                "facts_version": summary.facts_version,
            }))
        }
        FactsCommand::Export { to } => {
            use std::io::Write as _;
            let mut stream = client
                .export_facts(proto::ExportFactsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner();
            let mut out: Box<dyn std::io::Write> = match &to {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let received = crate::cli::progress::counting("entities received");
            while let Some(chunk) = stream.message().await.map_err(call_failed)? {
                received.inc(chunk.data.iter().filter(|b| **b == b'\n').count() as u64);
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
            received.finish_and_clear();
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends the entities of `file` (a JSON array, read one element at a time, or JSON lines, passed
/// through) as JSON lines in chunks.
fn send_import(
    file: &std::path::Path,
    sender: &tokio::sync::mpsc::Sender<proto::ImportFactsRequest>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Read as _};
    let input: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        )
    };
    let mut reader =
        std::io::BufReader::with_capacity(IMPORT_CHUNK_BYTES, progress.wrap_read(input));
    let send = |data: Vec<u8>| {
        sender
            .blocking_send(proto::ImportFactsRequest {
                data,
                ..proto::ImportFactsRequest::default()
            })
            .map_err(|_| anyhow::anyhow!("the server stopped reading the import"))
    };
    let first = loop {
        let buffer = reader.fill_buf()?;
        match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => break Some(buffer[at]),
            None if buffer.is_empty() => break None,
            None => {
                let length = buffer.len();
                reader.consume(length);
            }
        }
    };
    if first != Some(b'[') {
        // JSON lines: the server splits and parses them.
        loop {
            let mut data = vec![0; IMPORT_CHUNK_BYTES];
            let read = reader.read(&mut data)?;
            if read == 0 {
                return Ok(());
            }
            data.truncate(read);
            send(data)?;
        }
    }
    let mut data = Vec::with_capacity(IMPORT_CHUNK_BYTES);
    let mut each = |entity: Value| -> anyhow::Result<()> {
        data.extend_from_slice(entity.to_string().as_bytes());
        data.push(b'\n');
        if data.len() >= IMPORT_CHUNK_BYTES {
            send(std::mem::replace(
                &mut data,
                Vec::with_capacity(IMPORT_CHUNK_BYTES),
            ))?;
        }
        Ok(())
    };
    let mut json = serde_json::Deserializer::from_reader(reader);
    serde::de::DeserializeSeed::deserialize(EachElement(&mut each), &mut json)
        .with_context(|| format!("{} is not a JSON array of entities", file.display()))?;
    json.end()
        .with_context(|| format!("{}: text after the array", file.display()))?;
    if !data.is_empty() {
        send(data)?;
    }
    Ok(())
}

/// Deserialises a JSON array one element at a time, handing each to a function, so that a
/// large file is never held whole.
struct EachElement<'f>(&'f mut dyn FnMut(Value) -> anyhow::Result<()>);

impl<'de> serde::de::DeserializeSeed<'de> for EachElement<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EachElement<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of entities")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entity) = seq.next_element::<Value>()? {
            (self.0)(entity).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}
