-- Which customer an anonymous visitor is: a visitor seen with a customer id in any
-- source is that customer: an event carrying both ids (a login), an order placed by the
-- visitor, or the customer record holding the visitor's id (customers.visitor_id). When
-- a visitor was seen as several customers, the latest sighting wins (a record without
-- a date counts as the oldest). One row per visitor.
WITH links AS (
    -- most logged-in events repeat the same pair: reduce to pairs before ranking
    SELECT visitor_id, customer_id, MAX(seen_at) AS seen_at
    FROM (
        SELECT visitor_id, customer_id, last_seen_at AS seen_at
        FROM {{ mart('visitor_activity') }} activity
        WHERE visitor_id IS NOT NULL AND customer_id IS NOT NULL
        UNION ALL
        SELECT visitor_id, customer_id, created_at AS seen_at
        FROM {{ src('orders') }} orders
        WHERE visitor_id IS NOT NULL
        UNION ALL
        SELECT visitor_id, customer_id, COALESCE(updated_at, registered_at) AS seen_at
        FROM {{ src('customers') }} customers
        WHERE visitor_id IS NOT NULL
    ) seen
    GROUP BY visitor_id, customer_id
), ranked AS (
    SELECT visitor_id, customer_id, seen_at,
           ROW_NUMBER() OVER (PARTITION BY visitor_id ORDER BY seen_at DESC NULLS LAST, customer_id) AS latest
    FROM links
)
SELECT visitor_id, customer_id, seen_at AS linked_at
FROM ranked
WHERE latest = 1
