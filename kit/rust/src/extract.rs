//! `SagaCall` as a request extractor for actix-web and axum: the saga headers and the body, or
//! a 400 answer.

#[cfg(feature = "actix")]
mod actix_glue {
    use crate::call::SagaCall;
    use crate::reply::Reply;
    use actix_web::{dev::Payload, web::Bytes, FromRequest, HttpRequest};
    use futures::future::LocalBoxFuture;

    impl FromRequest for SagaCall {
        type Error = actix_web::Error;
        type Future = LocalBoxFuture<'static, Result<SagaCall, actix_web::Error>>;

        fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
            let req = req.clone();
            let body = Bytes::from_request(&req, payload);
            Box::pin(async move {
                let body = body.await?;
                let mut headers = http::HeaderMap::new();
                for (k, v) in req.headers() {
                    if let (Ok(k), Ok(v)) = (
                        http::HeaderName::from_bytes(k.as_str().as_bytes()),
                        http::HeaderValue::from_bytes(v.as_bytes()),
                    ) {
                        headers.append(k, v);
                    }
                }
                SagaCall::from_parts(&headers, body.to_vec()).map_err(|r: Reply| r.into())
            })
        }
    }
}

#[cfg(feature = "axum")]
mod axum_glue {
    use crate::call::SagaCall;
    use crate::reply::Reply;
    use axum::body::Bytes;
    use axum::extract::{FromRequest, Request};

    impl<S: Send + Sync> FromRequest<S> for SagaCall {
        type Rejection = Reply;

        async fn from_request(req: Request, state: &S) -> Result<SagaCall, Reply> {
            let headers = req.headers().clone();
            let body = Bytes::from_request(req, state)
                .await
                .map_err(|e| Reply::bad_request(format!("cannot read the body: {e}")))?;
            SagaCall::from_parts(&headers, body.to_vec())
        }
    }
}
