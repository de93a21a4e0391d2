"""Request bodies of the OpenAI/xAI-compatible API, as pydantic models.

Field names, types, ranges and defaults follow OpenAI's API reference, so a request the
`openai` client sends validates here unchanged. Unknown fields are ignored, as OpenAI-compatible
servers do, so clients that send newer or vendor fields keep working. Every range is checked
here: a malformed body is a 400 naming the field, never an error deeper in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 128
MAX_STOP_SEQUENCES = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class AudioPart(_Body):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class VideoPart(_Body):
    type: Literal["video_url"]
    video_url: dict[str, Any]  # {"url": ..., and optionally "fps", "max_frames"}


ContentPart = Annotated[Union[TextPart, ImagePart, AudioPart, VideoPart], Field(discriminator="type")]


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self


class FunctionDefinition(_Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with a name and a schema")
        return self

    def as_dict(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)


class StreamOptions(_Body):
    include_usage: bool | None = None


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # an extension several servers accept
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_count(cls, stop):
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"stop takes at most {MAX_STOP_SEQUENCES} sequences")
        return stop

    @property
    def stop_list(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(s for s in stops if s)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool | None = None
    # xAI's Live Search extension; its fields are checked by hepta.live.search (xAI's rules and messages)
    search_parameters: dict[str, Any] | None = None
    # vLLM's extension: options of the media processors, here a video's "fps" and "max_frames"
    mm_processor_kwargs: dict[str, Any] | None = None
    # OpenAI's reasoning effort; a folder's chat template reads it (gpt-oss writes it into its system message)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    # vLLM's extension: more variables for the folder's chat template
    chat_template_kwargs: dict[str, Any] | None = None

    def tool_dicts(self) -> list[dict] | None:
        """The tools as plain JSON objects, for the tool-call grammar and the chat template."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def tool_choice_value(self) -> str | dict | None:
        """`tool_choice` as plain JSON: a mode string, a named function as a dict, or None."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.model_dump()
        return self.tool_choice

    @model_validator(mode="after")
    def _logprobs(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        return self


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]] = Field(min_length=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=1)


class EmbeddingRequest(_Body):
    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


IMAGE_SIZES = ("256x256", "512x512", "1024x1024")  # besides "auto" and the model's native size
MAX_IMAGES_N = 10


class ImageGenerationRequest(_Body):
    model: str | None = None  # default: the served model
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES_N)
    response_format: Literal["b64_json", "url"] | None = None
    size: str | None = None  # checked against the model's native size by the route
    seed: int | None = None  # an extension: the same seed draws the same images
    user: str | None = None


class ImageURL(_Body):
    url: str


class ImageEditRequest(ImageGenerationRequest):
    """xAI's JSON form (`image: {"url": ...}`); the multipart form is read into the same fields."""

    image: Union[ImageURL, Annotated[list[ImageURL], Field(min_length=1, max_length=MAX_IMAGES_N)]]


# --- audio ----------------------------------------------------------------------------------------

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
SPEECH_FORMATS = ("wav", "pcm")


class TranscriptionForm(_Body):
    """The fields of /v1/audio/transcriptions' multipart form besides `file`."""

    model: str
    language: str | None = None
    prompt: str | None = None  # accepted and not used: the model takes no transcription prompt
    response_format: str = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    stream: bool = False


class SpeechRequest(_Body):
    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: Union[str, dict[str, Any]] = "alloy"  # every voice is the model's one voice
    response_format: str | None = None  # None: wav (OpenAI's default, mp3, is not produced)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None  # accepted and not used: the model has one way of speaking
    stream_format: Literal["audio"] = "audio"
