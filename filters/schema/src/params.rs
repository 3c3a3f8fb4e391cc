//! Path parameters: what a rule's `path_template` captured, by name.
//!
//! The core's [`PathTemplate`] matches the normalised path (percent-escapes
//! already decoded once), ignoring one trailing slash as rule matching does.
//! OpenAPI operations use placeholder names in their templates; their real
//! names come by position from `names`.

use palisade_core::path::PathTemplate;

/// The captured parameters as `(name, value)`; `None` if the path does not match.
pub fn captured(
    template: &PathTemplate,
    path: &str,
    names: Option<&[String]>,
) -> Option<Vec<(String, String)>> {
    let exact = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    };
    let captures = template.captures(exact)?;
    Some(
        captures
            .into_iter()
            .enumerate()
            .map(|(i, (name, value))| {
                let name = names.and_then(|n| n.get(i)).map_or(name, String::as_str);
                (name.to_string(), value.to_string())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(s: &str) -> PathTemplate {
        PathTemplate::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn captures_by_name_and_ignores_one_trailing_slash() {
        let t = template("/users/{id}/orders/{order}");
        assert_eq!(
            captured(&t, "/users/7/orders/x y/", None),
            Some(vec![
                ("id".into(), "7".into()),
                ("order".into(), "x y".into())
            ])
        );
        assert_eq!(captured(&t, "/users/7", None), None);
    }

    #[test]
    fn positional_names_replace_placeholders() {
        let t = template("/pets/{p0}");
        let names = vec!["pet-id".to_string()];
        assert_eq!(
            captured(&t, "/pets/3", Some(&names)),
            Some(vec![("pet-id".into(), "3".into())])
        );
    }
}
