//! Prompt templates (FORMAT.md, "Prompts"): a template is the prompt text
//! with two placeholders, `{audio}` for the clip and `{instruction}` for the
//! task, shared by the converter (which stores it) and the runtime (which
//! expands it for a one-off instruction).

/// Placeholder of the clip in a template.
pub const AUDIO_SLOT: &str = "{audio}";
/// Placeholder of the instruction in a template.
pub const INSTRUCTION_SLOT: &str = "{instruction}";
/// What `{audio}` expands to: Qwen2-Audio's audio span. The runtime repeats
/// the `<|AUDIO|>` token as many times as the clip yields audio positions.
pub const AUDIO_SPAN: &str = "<|audio_bos|><|AUDIO|><|audio_eos|>";

/// Qwen2-Audio-Instruct's chat template for one audio turn (what
/// `processor.apply_chat_template` renders for an audio and a text part).
pub const CHAT_TEMPLATE: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
<|im_start|>user\nAudio 1: {audio}\n{instruction}<|im_end|>\n<|im_start|>assistant\n";
/// The base model's prompt: the audio, then the instruction.
pub const BASE_TEMPLATE: &str = "{audio}{instruction}";

/// The built-in instruction per target language.
pub const DEFAULT_INSTRUCTIONS: [(&str, &str); 2] = [
    ("de", "Translate the English speech into German:"),
    ("zh", "Translate the English speech into Chinese:"),
];

/// Why a template or an instruction cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// A placeholder is missing or repeated.
    #[error("the prompt template must contain `{slot}` exactly once (found {count})")]
    Placeholder { slot: &'static str, count: usize },
    /// The template or an instruction holds the audio token itself, which
    /// would make a second audio position.
    #[error("{what} contains `<|AUDIO|>`; write `{{audio}}` in the template where the clip goes")]
    AudioToken { what: &'static str },
    /// An empty instruction.
    #[error("the instruction is empty")]
    EmptyInstruction,
}

/// Checks that `template` has each placeholder once and no audio token.
pub fn check_template(template: &str) -> Result<(), PromptError> {
    for slot in [AUDIO_SLOT, INSTRUCTION_SLOT] {
        let count = template.matches(slot).count();
        if count != 1 {
            return Err(PromptError::Placeholder { slot, count });
        }
    }
    if template.contains("<|AUDIO|>") {
        return Err(PromptError::AudioToken {
            what: "the prompt template",
        });
    }
    Ok(())
}

/// The full prompt text: `template` with the audio span and `instruction`
/// in place. The result holds `<|AUDIO|>` exactly once.
pub fn expand(template: &str, instruction: &str) -> Result<String, PromptError> {
    check_template(template)?;
    if instruction.trim().is_empty() {
        return Err(PromptError::EmptyInstruction);
    }
    if instruction.contains("<|AUDIO|>") {
        return Err(PromptError::AudioToken {
            what: "the instruction",
        });
    }
    // Split first, so an instruction that happens to contain `{audio}` is
    // taken literally.
    let (before, after) = template
        .split_once(INSTRUCTION_SLOT)
        .expect("checked: one instruction slot");
    let expand_audio = |s: &str| s.replace(AUDIO_SLOT, AUDIO_SPAN);
    Ok(format!(
        "{}{instruction}{}",
        expand_audio(before),
        expand_audio(after)
    ))
}

/// The text-translation prompt (the translation meter): `template` with the
/// source `text` where the audio goes and `instruction` in place. The
/// result holds no `<|AUDIO|>`.
pub fn expand_text(template: &str, instruction: &str, text: &str) -> Result<String, PromptError> {
    let with_audio = expand(template, instruction)?;
    if text.contains("<|AUDIO|>") {
        return Err(PromptError::AudioToken {
            what: "the source text",
        });
    }
    Ok(with_audio.replacen(AUDIO_SPAN, text, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_expand_to_the_known_prompts() {
        assert_eq!(
            expand(CHAT_TEMPLATE, "Translate the English speech into German:").unwrap(),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: \
             <|audio_bos|><|AUDIO|><|audio_eos|>\nTranslate the English speech into German:<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            expand(BASE_TEMPLATE, "Say it in German:").unwrap(),
            "<|audio_bos|><|AUDIO|><|audio_eos|>Say it in German:"
        );
    }

    #[test]
    fn text_prompts_put_the_text_where_the_audio_goes() {
        assert_eq!(
            expand_text(BASE_TEMPLATE, "Into German:", "Hello.").unwrap(),
            "Hello.Into German:"
        );
        let chat = expand_text(CHAT_TEMPLATE, "Translate:", "Save {audio} now.").unwrap();
        assert!(
            chat.contains("user\nAudio 1: Save {audio} now.\nTranslate:<|im_end|>"),
            "{chat}"
        );
        assert!(expand_text(BASE_TEMPLATE, "x", "<|AUDIO|>").is_err());
    }

    #[test]
    fn bad_templates_and_instructions_are_named() {
        assert_eq!(
            check_template("{instruction}"),
            Err(PromptError::Placeholder {
                slot: AUDIO_SLOT,
                count: 0
            })
        );
        assert_eq!(
            check_template("{audio}{audio}{instruction}"),
            Err(PromptError::Placeholder {
                slot: AUDIO_SLOT,
                count: 2
            })
        );
        assert!(matches!(
            check_template("<|AUDIO|>{audio}{instruction}"),
            Err(PromptError::AudioToken { .. })
        ));
        assert_eq!(
            expand(BASE_TEMPLATE, "  "),
            Err(PromptError::EmptyInstruction)
        );
        // An instruction that mentions a placeholder is text, not a slot.
        assert_eq!(
            expand(BASE_TEMPLATE, "use {audio}").unwrap(),
            "<|audio_bos|><|AUDIO|><|audio_eos|>use {audio}"
        );
        let msg = check_template("x").unwrap_err().to_string();
        assert!(msg.contains("`{audio}` exactly once"), "{msg}");
    }
}
